public import Foundation
package import Panza

/// Runs `PanzaTestWorker` (the helper program built beside the test bundle), or another program
/// such as `panza`, as a real process (spawned by `SpawnedProcess`: Foundation's `Process.run()`
/// crashes now and then on Linux).
public struct ChildProcess {
    package let process: SpawnedProcess

    /// The worker binary: it sits in the same build folder as the test bundle.
    public static var workerURL: URL {
        let testBinary = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        return testBinary.deletingLastPathComponent().appendingPathComponent("PanzaTestWorker")
    }

    /// Starts `executable` (the worker by default) with `arguments`, in this process's environment
    /// without the variables that change Panza's behaviour, plus `environment`.
    public static func start(
        _ arguments: [String],
        executable: URL = workerURL,
        environment: [String: String] = [:]
    ) throws -> ChildProcess {
        var merged = ProcessInfo.processInfo.environment
        for name in ["BUST_CACHE", "CACHE_ONLY", "PRINT_CACHE_MISSES", "PANZA_S3_BUCKET"] { merged[name] = nil }
        merged.merge(environment) { $1 }
        let process = try SpawnedProcess(
            executable: executable.path, arguments: arguments, environment: merged, standardInput: .pipe)
        return ChildProcess(process: process)
    }

    /// Runs the worker to completion; returns its exit status, standard output and standard error.
    public static func run(_ arguments: [String], environment: [String: String] = [:]) async throws -> (
        status: Int32, output: String, error: String
    ) {
        let child = try start(arguments, environment: environment)
        return try await child.wait()
    }

    public func wait() async throws -> (status: Int32, output: String, error: String) {
        let process = self.process
        return await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                let out = process.standardOutput!.readDataToEndOfFile()
                let err = process.standardError!.readDataToEndOfFile()
                let status = process.waitUntilExit().status
                continuation.resume(
                    returning: (
                        status,
                        String(decoding: out, as: UTF8.self),
                        String(decoding: err, as: UTF8.self)
                    ))
            }
        }
    }

    /// Reads standard output until a line equal to `line` arrives (or the output ends).
    public func waitForLine(_ line: String) async -> Bool {
        await self.waitForLine { $0 == line } != nil
    }

    /// Reads standard output until a line starting with `prefix` arrives; returns that line, or
    /// `nil` when the output ends first.
    public func waitForLine(startingWith prefix: String) async -> String? {
        await self.waitForLine { $0.hasPrefix(prefix) }
    }

    private func waitForLine(where matches: @escaping @Sendable (Substring) -> Bool) async -> String? {
        let handle = self.process.standardOutput!
        return await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                var buffer = ""
                while true {
                    let data = handle.availableData
                    if data.isEmpty {
                        continuation.resume(returning: nil)
                        return
                    }
                    buffer += String(decoding: data, as: UTF8.self)
                    // The last piece may be an unfinished line.
                    let lines = buffer.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
                    if let line = lines.first(where: matches) {
                        continuation.resume(returning: String(line))
                        return
                    }
                }
            }
        }
    }

    /// Writes `line` and a newline to the child's standard input.
    public func send(line: String) {
        self.process.standardInput!.write(Data((line + "\n").utf8))
    }

    /// Sends `line` and returns the next answer line, which starts with `= ` (without it); `nil`
    /// when the child's output ends first.
    public func ask(_ line: String) async -> String? {
        self.send(line: line)
        return await self.waitForLine(startingWith: "= ").map { String($0.dropFirst(2)) }
    }

    /// Sends `signal` and returns at once (``wait()`` collects the end).
    public func send(signal: Int32) {
        self.process.send(signal: signal)
    }

    /// Sends `signal` and waits for the child's end, which it returns.
    @discardableResult
    package func kill(signal: Int32) -> SpawnedProcess.Termination {
        self.process.send(signal: signal)
        return self.process.waitUntilExit()
    }
}
