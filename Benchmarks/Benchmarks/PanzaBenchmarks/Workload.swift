import Foundation

/// The data the benchmarks cache: realistic JSON of about 1 KiB, so that compression is honest.
enum Workload {
    static let valueBytes = 1024

    /// A JSON document of exactly `valueBytes` bytes, different for every seed.
    static func json(seed: Int) -> String {
        var text = "{\"id\":\(seed),\"model\":\"panza-bench\",\"choices\":["
        var index = 0
        while text.utf8.count < valueBytes - 80 {
            text +=
                "{\"index\":\(index),\"text\":\"token \(seed &* 31 &+ index) of a cached completion\",\"logprob\":-0.\(index % 10)\(seed % 7)},"
            index += 1
        }
        text += "],\"usage\":{\"prompt\":\(seed % 97)}"
        while text.utf8.count < valueBytes - 1 { text += " " }
        return text + "}"
    }

    static func temporaryPath(_ name: String) -> String {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("panza-benchmarks")
        try? FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let path = folder.appendingPathComponent(name).path
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
        return path
    }
}

/// Runs `iterations` calls of `body`, spread evenly over `tasks` concurrent tasks: on the cooperative
/// pool (of which the benchmark harness leaves one thread), or on every core (`onEveryCore`, see
/// ``CoreTaskExecutor``; for code that does not suspend: a task resumed there waits for a thread
/// woken through a semaphore).
func runConcurrently(
    iterations: Int,
    tasks: Int,
    onEveryCore: Bool = false,
    _ body: @escaping @Sendable (_ task: Int, _ index: Int) async throws -> Void
) async throws {
    if tasks == 1, !onEveryCore {
        // One task: the benchmark's own, as in the baselines, without a child task.
        for index in 0..<iterations { try await body(0, index) }
        return
    }
    try await withThrowingTaskGroup(of: Void.self) { group in
        for task in 0..<tasks {
            group.addTask(executorPreference: onEveryCore ? CoreTaskExecutor.shared : nil) {
                for index in 0..<(iterations / tasks) { try await body(task, index) }
            }
        }
        try await group.waitForAll()
    }
}
