import Foundation
import Synchronization
import Testing

@testable import Panza

/// The `panza` command, run as a real process on real files.
@Suite(.timeLimit(.minutes(3)))
struct CLITests {
    let directory: TemporaryDirectory

    init() throws {
        self.directory = try TemporaryDirectory()
    }

    static var panzaURL: URL {
        ChildProcess.workerURL.deletingLastPathComponent().appendingPathComponent("panza")
    }

    func panza(_ arguments: [String], environment extra: [String: String] = [:]) async throws -> (
        status: Int32, output: String, error: String
    ) {
        try await ChildProcess.start(arguments, executable: Self.panzaURL, environment: extra).wait()
    }

    func json(_ text: String) throws -> Any {
        try JSONSerialization.jsonObject(with: Data(text.utf8))
    }

    @Test("demo --json: the cold call reaches the API, the warm one memory, the second process SQLite")
    func demo() async throws {
        let result = try await self.panza([
            "demo", "--json", "--latency", "20", "--path", self.directory.path("demo.sqlite"),
        ])
        #expect(result.status == 0, "\(result.error)")
        let report = try #require(try self.json(result.output) as? [String: Any])
        let steps = try #require(report["steps"] as? [[String: Any]])
        #expect(steps.map { $0["servedBy"] as? String } == ["api", "memory", "sqlite"])
        #expect(steps.map { $0["apiCalls"] as? Int } == [1, 0, 0])
    }

    @Test("--version, shell completions, and stats --watch refreshing once a second")
    func installableTool() async throws {
        let version = try await self.panza(["--version"])
        #expect(version.status == 0 && version.output.trimmingCharacters(in: .whitespacesAndNewlines) == "0.1.0-dev")
        for shell in ["bash", "zsh", "fish"] {
            let completion = try await self.panza(["--generate-completion-script", shell])
            #expect(completion.status == 0 && completion.output.contains("panza"), "\(shell)")
        }
        let path = self.directory.path("watched.sqlite")
        let cache = try await makeCache(in: self.directory, file: "watched.sqlite")
        try await cache.set("v", forKey: "k")
        try await cache.close()

        let process = try SpawnedProcess(
            executable: Self.panzaURL.path, arguments: ["stats", "--watch", "--json", "--path", path],
            environment: ProcessInfo.processInfo.environment, standardError: .inherit)
        try await Task.sleep(for: .milliseconds(2_500))
        process.send(signal: SIGTERM)
        let text: String = await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                let data = process.standardOutput!.readDataToEndOfFile()
                _ = process.waitUntilExit()
                continuation.resume(returning: String(decoding: data, as: UTF8.self))
            }
        }
        let reports = text.components(separatedBy: "\"pendingUploads\"").count - 1
        #expect(reports >= 2, "stats --watch printed \(reports) reports in 2.5 s: \(text)")
    }

    @Test("stats with S3 blackholed says UNREACHABLE within its timeout instead of failing or hanging")
    func statsWithDeadS3() async throws {
        let path = self.directory.path("cache.sqlite")
        let cache = try await makeCache(in: self.directory)
        try await cache.set("plain", forKey: "k")
        try await cache.close()
        let server = try LoopbackHTTPServer.blackhole()
        defer { server.close() }
        let started = ContinuousClock.now
        let result = try await self.panza(
            [
                "stats", "--path", path, "--s3-bucket", "dead-bucket", "--s3-endpoint", server.endpoint, "--s3-timeout",
                "1",
            ],
            environment: ["AWS_ACCESS_KEY_ID": "AKIATEST", "AWS_SECRET_ACCESS_KEY": "secret"]
        )
        #expect(result.status == 0, "\(result.error)")
        #expect(result.output.contains("UNREACHABLE"))
        #expect(result.output.contains("entries   1"))
        #expect(ContinuousClock.now - started < .seconds(20))
    }

    @Test("stats, ls, get, verify, rm and bust work on a cache file, with --json")
    func inspection() async throws {
        let path = self.directory.path("cache.sqlite")
        let cache = try await makeCache(in: self.directory)
        let f = cache.memoize(id: "f") { (x: Int) async throws -> String in "value \(x)" }
        for x in 0..<3 { _ = try await f(x) }
        try await cache.set("plain", forKey: "k")
        try await cache.close()

        let stats = try #require(
            try self.json(try await self.panza(["stats", "--json", "--path", path]).output) as? [String: Any])
        #expect((stats["usage"] as? [String: Any])?["entries"] as? Int == 4)
        let list = try #require(
            try self.json(try await self.panza(["ls", "--json", "--id", "f", "--path", path]).output)
                as? [[String: Any]])
        #expect(list.count == 3)
        let key = try #require(list.first?["key"] as? String)
        let get = try await self.panza(["get", "--path", path, key])
        #expect(get.output.hasPrefix("value "))
        let verify = try #require(
            try self.json(try await self.panza(["verify", "--json", "--path", path]).output) as? [String: Any])
        #expect(verify["checked"] as? Int == 4)
        #expect((verify["corruptKeys"] as? [String])?.isEmpty == true)
        #expect(try await self.panza(["rm", "--path", path, "k"]).output.contains("removed 1"))
        #expect(try await self.panza(["bust", "--path", path, "f"]).output.contains("removed 3"))
        let after = try #require(
            try self.json(try await self.panza(["stats", "--json", "--path", path]).output) as? [String: Any])
        #expect((after["usage"] as? [String: Any])?["entries"] as? Int == 0)
    }

    @Test(
        "Errors are one line on standard error and a non-zero status",
        arguments: [
            ["stats", "--path", "MISSING"], ["get", "--path", "GARBAGE", "k"],
        ])
    func errors(arguments: [String]) async throws {
        let garbage = self.directory.path("garbage.sqlite")
        try Data(repeating: 7, count: 4096).write(to: URL(fileURLWithPath: garbage))
        let resolved = arguments.map {
            $0 == "MISSING" ? self.directory.path("missing.sqlite") : $0 == "GARBAGE" ? garbage : $0
        }
        let result = try await self.panza(resolved)
        #expect(result.status != 0)
        #expect(result.output.isEmpty)
        let lines = result.error.split(separator: "\n")
        #expect(lines.count == 1, "\(result.error)")
        #expect(lines.first?.hasPrefix("panza: error: ") == true)
    }

    @Test("ls and get show whether an entry is fresh, stale (within its stale period) or expired")
    func freshnessStates() async throws {
        let path = self.directory.path("cache.sqlite")
        // Written two minutes ago: 60 s fresh, then stale for an hour (or for no time at all).
        let clock = ManualCacheClock(nowMilliseconds: SystemCacheClock().nowMilliseconds() - 120_000)
        let cache = try await makeCache(in: self.directory) { $0.clock = clock }
        _ = try await cache.value(
            forKey: "stale", timeToLive: .seconds(60), freshness: Freshness(staleFor: .seconds(3600))
        ) {
            "s"
        }
        _ = try await cache.value(forKey: "expired", timeToLive: .seconds(60)) { "e" }
        _ = try await cache.value(forKey: "fresh", timeToLive: .seconds(3600)) { "f" }
        try await cache.close()
        let table = try await self.panza(["ls", "--path", path]).output
        let states = Dictionary(
            uniqueKeysWithValues: table.split(separator: "\n").dropFirst().map {
                let columns = $0.split(separator: " ", omittingEmptySubsequences: true)
                return (String(columns.first ?? ""), String(columns.last ?? ""))
            })
        #expect(states["stale"] == "stale" && states["fresh"] == "fresh", "\(table)")
        // An expired entry is listed as such until the background reclaim deletes it.
        #expect(states["expired"] == nil || states["expired"] == "expired", "\(table)")
        let get = try #require(
            try self.json(try await self.panza(["get", "--json", "--path", path, "stale"]).output) as? [String: Any])
        #expect(get["state"] as? String == "stale")
        #expect(get["staleUntil"] is String)
    }

    @Test("verify finds a damaged blob and exits 3; --remove deletes it")
    func verifyDamage() async throws {
        let path = self.directory.path("cache.sqlite")
        let cache = try await makeCache(in: self.directory)
        try await cache.set(String(repeating: "x", count: 500), forKey: "k")
        try await cache.close()
        let connection = try SQLiteConnection(path: path, busyTimeoutMilliseconds: 1000)
        try connection.execute("UPDATE entry SET blob = CAST(zeroblob(8) || substr(blob, 9) AS BLOB)")
        connection.close()
        #expect(try await self.panza(["verify", "--path", path]).status == 3)
        #expect(try await self.panza(["verify", "--remove", "--path", path]).status == 0)
        #expect(try await self.panza(["verify", "--path", path]).status == 0)
    }

    @Test("bench runs a small matrix and recommends a configuration, with a chart")
    func bench() async throws {
        let chart = self.directory.path("chart.svg")
        let result = try await self.panza([
            "bench", "--json", "--keys", "200", "--operations", "2000", "--loader-latency", "0.2",
            "--memory-sizes", "0,4096,65536", "--chart", chart,
        ])
        #expect(result.status == 0, "\(result.error)")
        let report = try #require(try self.json(result.output) as? [String: Any])
        let results = try #require(report["results"] as? [[String: Any]])
        #expect(results.count == 5)  // 2 memory sizes without SQLite, 3 with
        #expect(results.allSatisfy { ($0["operations"] as? Int) == 2000 })
        #expect(report["recommendation"] != nil)
        let svg = try String(contentsOfFile: chart, encoding: .utf8)
        #expect(svg.hasPrefix("<svg") && svg.contains("polyline"))
    }

    @Test("bench --outage: with fail-safe, reads during an API outage still get the values loaded before it")
    func benchOutage() async throws {
        let result = try await self.panza([
            "bench", "--json", "--keys", "50", "--operations", "3000", "--loader-latency", "0", "--writes", "0",
            "--ttl", "1", "--outage", "0.5-1", "--memory-sizes", "1000000", "--chart",
            self.directory.path("outage.svg"),
        ])
        #expect(result.status == 0, "\(result.error)")
        let report = try #require(try self.json(result.output) as? [String: Any])
        let results = try #require(report["results"] as? [[String: Any]])
        // One memory size (room for every key) with and without SQLite, each without and with
        // fail-safe.
        #expect(results.count == 4)
        for pair in stride(from: 0, to: results.count, by: 2) {
            let plain = try #require(results[pair]["successRatio"] as? Double)
            let failSafe = try #require(results[pair + 1]["successRatio"] as? Double)
            #expect((results[pair + 1]["label"] as? String)?.hasSuffix("fail-safe") == true)
            // Half the reads fall in the outage: without fail-safe most of them fail (entries live
            // 1 ms); with it, every key seen before the outage is still served.
            #expect(plain < 0.9, "\(results[pair])")
            #expect(failSafe > 0.99, "\(results[pair + 1])")
        }
        let recommended = try #require(report["recommendation"] as? [String: Any])
        #expect((recommended["label"] as? String)?.hasSuffix("fail-safe") == true, "\(recommended)")
    }

    @Test(
        "bench recommends the cheapest configuration that meets --target-p99 and --memory-budget, ties going to latency"
    )
    func benchGoals() async throws {
        let common = [
            "bench", "--json", "--keys", "100", "--operations", "1500", "--loader-latency", "0.2",
            "--memory-sizes", "0,1000000", "--chart", self.directory.path("goals.svg"),
            // One task: concurrent operations on one key (a write racing a load) may cost a
            // configuration a loader call more, which would break the tie this test is about.
            "--concurrency", "1",
        ]
        func recommendation(_ extra: [String]) async throws -> (setup: [String: Any]?, report: [String: Any]) {
            let result = try await self.panza(common + extra)
            #expect(result.status == 0, "\(result.error)")
            let report = try #require(try self.json(result.output) as? [String: Any])
            let recommended = report["recommendation"] as? [String: Any]
            return (recommended?["setup"] as? [String: Any], report)
        }
        // Every configuration with SQLite misses only the 100 first reads: the loader calls tie, and
        // memory costs next to nothing beside them, so the faster typical call wins (memory, not
        // SQLite alone: its p50 is several times higher).
        let (byDefault, defaultReport) = try await recommendation([])
        let results = try #require(defaultReport["results"] as? [[String: Any]])
        let costs = try #require(defaultReport["costs"] as? [Double])
        #expect(costs.count == results.count)
        #expect(byDefault?["memoryBytes"] as? Int == 1_000_000, "\(defaultReport["recommendationReason"] ?? "")")
        // No memory allowed: a configuration without a memory tier.
        let (budgeted, _) = try await recommendation(["--memory-budget", "0"])
        #expect(budgeted != nil && budgeted?["memoryBytes"] == nil)
        // A p99 nobody reaches: no recommendation, and why.
        let (none, noneReport) = try await recommendation(["--target-p99", "0.000001"])
        #expect(none == nil)
        #expect((noneReport["recommendationReason"] as? String)?.contains("no configuration meets") == true)
        let bad = try await self.panza(common + ["--target-p99", "-1"])
        #expect(bad.status == 64)
    }

    @Test("bench replays a recorded trace")
    func benchTrace() async throws {
        let tracePath = self.directory.path("trace.pnzt")
        let trace = try AccessTrace(path: tracePath)
        let cache = try await makeCache(in: self.directory, sqlite: false) { $0.trace = trace }
        for index in 0..<300 { _ = try await cache.value(forKey: "k\(index % 40)") { "value \(index % 40)" } }
        try await cache.close()
        let result = try await self.panza([
            "bench", "--json", "--trace", tracePath, "--memory-sizes", "0,100000", "--chart",
            self.directory.path("t.svg"),
        ])
        #expect(result.status == 0, "\(result.error)")
        let report = try #require(try self.json(result.output) as? [String: Any])
        let workload = try #require(report["workload"] as? [String: Any])
        #expect(workload["operations"] as? Int == 300)
        #expect(workload["keys"] as? Int == 40)
        let results = try #require(report["results"] as? [[String: Any]])
        #expect(results.contains { ($0["loaderCalls"] as? Int) == 40 })
    }

    @Test("outbox lists dead letters and exits 3; --retry requeues them from the local entries; --discard drops them")
    func outbox() async throws {
        let path = self.directory.path("cache.sqlite")
        let remote = RecordingTier()
        remote.state.withLock { $0.rejectedKeys = ["refused"] }
        let cache = try await makeCache(in: self.directory) { $0.remote = remote }
        try await cache.set("v", forKey: "refused")
        try await cache.set("w", forKey: "accepted")
        _ = try? await cache.flush()
        #expect(await eventually { (try? await cache.flush()) != nil })
        try await cache.close()
        #expect(remote.keys == ["accepted"])

        let listed = try await self.panza(["outbox", "--path", path, "--json"])
        #expect(listed.status == 3, "\(listed.error)")
        let report = try #require(try self.json(listed.output) as? [String: Any])
        #expect(report["deadLetterCount"] as? Int == 1)
        let letters = try #require(report["deadLetters"] as? [[String: Any]])
        #expect(letters.first?["key"] as? String == "refused")
        #expect(letters.first?["operation"] as? String == "store")
        #expect(try await self.panza(["stats", "--path", path]).output.contains("1 dead letters"))

        let retried = try await self.panza(["outbox", "--retry", "--path", path, "--json"])
        #expect(retried.status == 0, "\(retried.error)")
        let afterRetry = try #require(try self.json(retried.output) as? [String: Any])
        #expect(afterRetry["retried"] as? Int == 1)
        #expect(afterRetry["pendingUploads"] as? Int == 1, "the retried upload is not back in the outbox")

        // Rejected again, then discarded.
        let again = try await makeCache(in: self.directory) { $0.remote = remote }
        #expect(await eventually { (try? await again.flush()) != nil })
        try await again.close()
        #expect(try await self.panza(["outbox", "--path", path]).status == 3)
        let discarded = try await self.panza(["outbox", "--discard", "--path", path])
        #expect(discarded.status == 0)
        #expect(discarded.output.contains("discarded 1 dead letters"))
    }
}
