import Foundation
import Testing

@testable import Panza

/// Tests with real child processes (`PanzaTestWorker`).
@Suite(.timeLimit(.minutes(2)))
struct ProcessTests {
    let directory: TemporaryDirectory

    init() throws {
        self.directory = try TemporaryDirectory()
    }

    @Test("The worker program is built beside the tests")
    func workerExists() {
        #expect(
            FileManager.default.isExecutableFile(atPath: ChildProcess.workerURL.path),
            "\(ChildProcess.workerURL.path) is missing")
    }

    @Test("A memoized result persists across processes")
    func persistenceAcrossProcesses() async throws {
        let path = self.directory.path("cache.sqlite")
        let first = try await ChildProcess.run(["memo", path, "Oslo"])
        #expect(first.status == 0, "\(first.error)")
        #expect(first.output == "Oslo 1\n")
        let second = try await ChildProcess.run(["memo", path, "Oslo"])
        #expect(second.output == "Oslo 0\n", "the second process called the function again")
    }

    @Test("PRINT_CACHE_MISSES prints each miss to standard error")
    func printMisses() async throws {
        let path = self.directory.path("cache.sqlite")
        let first = try await ChildProcess.run(["memo", path, "Oslo"], environment: ["PRINT_CACHE_MISSES": "1"])
        #expect(first.error.contains("panza: cache miss: id=forecast key=forecast/"))
        let second = try await ChildProcess.run(["memo", path, "Oslo"], environment: ["PRINT_CACHE_MISSES": "1"])
        #expect(!second.error.contains("cache miss"))
    }

    @Test("CACHE_ONLY from the environment makes a miss fail in a real process")
    func cacheOnlyFromEnvironment() async throws {
        let path = self.directory.path("cache.sqlite")
        let result = try await ChildProcess.run(["memo", path, "Oslo"], environment: ["CACHE_ONLY": "1"])
        #expect(result.status != 0)
        #expect(result.error.contains("cacheOnlyMiss"))
    }

    @Test(
        "The example service flushes its cache on SIGTERM (ServiceLifecycle): nothing served before the signal is lost")
    func sigtermFlushes() async throws {
        let path = self.directory.path("service.sqlite")
        let requests = 3_000
        let child = try ChildProcess.start(["service", path, "\(requests)"])
        let served = try #require(await child.waitForLine(startingWith: "served"), "the service did not start")
        child.send(signal: SIGTERM)
        let result = try await child.wait()
        #expect(result.status == 0, "the service did not shut down gracefully: \(result.error)")
        #expect(result.output.contains("stopped"))
        // What was still queued at the signal (\(served)) was flushed by the graceful shutdown.
        let cache = try await makeCache(in: self.directory, memory: nil, file: "service.sqlite")
        let calls = CallCounter()
        let forecast = cache.memoize(id: "forecast") { (city: String, day: Int) async throws -> String in
            calls.increment()
            return "recomputed"
        }
        for index in 0..<requests {
            let value = try await forecast("city-\(index % 50)", index)
            if !value.hasPrefix("forecast for") {
                Issue.record("request \(index) was lost at SIGTERM")
                break
            }
        }
        #expect(calls.value == 0)
        for index in 0..<500 {
            let report = try await cache.value(forKey: "report-\(index)", as: String.self)
            if report?.hasSuffix("\(index)") != true {
                Issue.record("report \(index) was lost at SIGTERM")
                break
            }
        }
        // How much was still queued at the signal depends on the machine ("served N" says it):
        // whatever it was, nothing is missing.
        _ = served
        try await cache.close()
    }

    @Test("Writes survive SIGKILL once flush() has returned")
    func sigkillAfterFlush() async throws {
        let path = self.directory.path("cache.sqlite")
        let child = try ChildProcess.start(["write-and-wait", path, "3000", "killed"])
        #expect(await child.waitForLine("flushed"), "the worker did not report a flush")
        #expect(child.kill(signal: SIGKILL) == .signalled(SIGKILL))

        let cache = try await makeCache(in: self.directory)
        for index in stride(from: 0, to: 3000, by: 1) {
            let value = try await cache.value(forKey: "killed-\(index)", as: String.self)
            if value != "value-\(index)" {
                Issue.record("entry \(index) lost after SIGKILL: \(String(describing: value))")
                break
            }
        }
        let tier = try #require(cache.tiers.first as? SQLiteTier)
        #expect(try await tier.usage().entries == 3000)
        try await cache.close()
    }

    @Test("Several processes write and read one file at once without a locking error")
    func concurrentProcesses() async throws {
        let path = self.directory.path("cache.sqlite")
        // Create the file first so that the workers race on use, not on creation.
        try await makeCache(in: self.directory).close()
        let workers = try ["a", "b", "c"].map { try ChildProcess.start(["hammer", path, "400", $0]) }
        for worker in workers {
            let result = try await worker.wait()
            #expect(result.status == 0, "worker failed: \(result.error)")
            #expect(result.output.hasPrefix("ok "))
        }
        let cache = try await makeCache(in: self.directory)
        let tier = try #require(cache.tiers.first as? SQLiteTier)
        #expect(try await tier.usage().entries == 1200)
        try await cache.close()
    }

    @Test("Two processes opening a new file at the same moment both succeed")
    func concurrentCreation() async throws {
        let path = self.directory.path("fresh.sqlite")
        let workers = try (0..<4).map { _ in try ChildProcess.start(["memo", path, "Oslo"]) }
        var loads = 0
        for worker in workers {
            let result = try await worker.wait()
            #expect(result.status == 0, "worker failed: \(result.error)")
            loads +=
                Int(result.output.split(separator: " ").last?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "")
                ?? 0
        }
        #expect(loads >= 1)
    }

    @Test("SQLite's memory statistics turn off for a process only before SQLite initializes")
    func memoryStatisticsOff() async throws {
        // The twin with the statistics on: SQLite counts what the same work allocated.
        let on = try await ChildProcess.run(["memory-statistics", self.directory.path("on.sqlite"), "on"])
        #expect(on.status == 0, "\(on.error)")
        let onFields = Self.fields(on.output)
        #expect(onFields["disabled"] == "false")
        #expect(Int(onFields["used"] ?? "") ?? 0 > 0, "\(on.output)")
        #expect(onFields["again"] == "false", "a call once SQLite is initialized must change nothing")

        let off = try await ChildProcess.run(["memory-statistics", self.directory.path("off.sqlite"), "off"])
        #expect(off.status == 0, "\(off.error)")
        let offFields = Self.fields(off.output)
        #expect(offFields["disabled"] == "true")
        #expect(offFields["used"] == "0", "\(off.output)")
        #expect(offFields["again"] == "false")
    }

    /// `"a=1 b=2\n"` as `["a": "1", "b": "2"]`.
    private static func fields(_ line: String) -> [String: String] {
        var fields: [String: String] = [:]
        for word in line.split(whereSeparator: \.isWhitespace) {
            let parts = word.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { fields[String(parts[0])] = String(parts[1]) }
        }
        return fields
    }
}
