import ArgumentParser
import Foundation
import Panza

struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Memoize a simulated slow API through memory and SQLite, and show what each tier saves.",
        discussion: """
            Runs a cold call (the API is called), a warm call (served from memory), then starts a second \
            process with an empty memory tier that is served from the SQLite file. With an S3 bucket \
            (--s3-bucket), a third process with a SQLite file of its own, as on another machine, is \
            served from S3.
            """
    )

    @OptionGroup var options: CacheOptions
    @OptionGroup var s3: S3Options

    @Option(help: "Latency of the simulated API, in milliseconds.")
    var latency = 300

    @Flag(help: .hidden)
    var child = false

    /// The demo's simulated API result: a realistic JSON document, so compression is honest.
    struct Forecast: Codable, Sendable {
        struct Hour: Codable, Sendable {
            var time: String
            var temperature: Double
            var precipitation: Double
            var windSpeed: Double
            var summary: String
        }
        var city: String
        var days: Int
        var hours: [Hour]
    }

    struct Step: Codable {
        var name: String
        var servedBy: String
        var milliseconds: Double
        var apiCalls: Int
    }

    struct Report: Codable {
        var path: String
        var steps: [Step]
        var storedBytes: Int
        var statistics: CacheStatistics
    }

    func validate() throws {
        guard (0...60_000).contains(self.latency) else { throw ValidationError("--latency must be 0 to 60000 ms") }
    }

    func run() async throws {
        let path = self.options.resolvedPath
        let calls = CallCount()
        var configuration = TieredCache.Configuration()
        configuration.memory = .init(maxEntries: 1_000, maxBytes: 16 << 20)
        configuration.sqlite = .init(path: path, maxBytes: 64 << 20)
        configuration.remote = try self.s3.makeTier()
        let cache = try await TieredCache(configuration: configuration)
        let latency = self.latency
        let forecast = cache.memoize(id: "demo.forecast") { (city: String, days: Int) async throws -> Forecast in
            calls.increment()
            try await Task.sleep(for: .milliseconds(latency))
            return Self.simulatedForecast(city: city, days: days)
        }

        if self.child {
            let (_, elapsed) = try await Self.measure { try await forecast("Oslo", 3) }
            let statistics = cache.statistics
            try await cache.close()
            let servedBy =
                statistics.tiers["sqlite"]?.hits == 1
                ? "sqlite" : statistics.tiers["s3"]?.hits == 1 ? "s3" : (calls.value > 0 ? "api" : "memory")
            let name = self.s3.resolvedBucket == nil || servedBy == "sqlite" ? "second process" : "other machine"
            try Output.json(Step(name: name, servedBy: servedBy, milliseconds: elapsed, apiCalls: calls.value))
            return
        }

        try await forecast.bustAll()  // start cold, whatever an earlier demo left
        var steps: [Step] = []
        let (_, cold) = try await Self.measure { try await forecast("Oslo", 3) }
        steps.append(Step(name: "cold call", servedBy: "api", milliseconds: cold, apiCalls: calls.value))
        let (_, warm) = try await Self.measure { try await forecast("Oslo", 3) }
        steps.append(Step(name: "warm call", servedBy: "memory", milliseconds: warm, apiCalls: calls.value - 1))
        try await cache.flush()
        let statistics = cache.statistics
        let sqlite = cache.tiers.first as? SQLiteTier
        let storedBytes = try await sqlite?.entries(namespace: "demo.forecast").first?.size ?? 0
        try await cache.close()

        steps.append(try await self.runChild(path: path))
        if self.s3.resolvedBucket != nil {
            // Another machine: a SQLite file of its own, the same bucket.
            let otherMachine = FileManager.default.temporaryDirectory
                .appendingPathComponent("panza-demo-other-machine-\(UUID().uuidString).sqlite").path
            defer {
                for suffix in ["", "-wal", "-shm"] {
                    try? FileManager.default.removeItem(atPath: otherMachine + suffix)
                }
            }
            steps.append(try await self.runChild(path: otherMachine))
        }

        let report = Report(path: path, steps: steps, storedBytes: storedBytes, statistics: statistics)
        if self.options.json {
            try Output.json(report)
            return
        }
        let bucket = self.s3.resolvedBucket.map { ", S3 bucket \($0)" } ?? ""
        print("Panza demo: memoizing a simulated \(self.latency) ms forecast API (cache file \(path)\(bucket))\n")
        Output.table(
            [["CALL", "SERVED BY", "TIME", "API CALLS"]]
                + steps.map {
                    [
                        $0.name, $0.servedBy, Output.duration(.nanoseconds(Int64($0.milliseconds * 1e6))),
                        "\($0.apiCalls)",
                    ]
                }
        )
        let payload = try JSONEncoder().encode(Self.simulatedForecast(city: "Oslo", days: 3)).count
        print(
            "\nThe forecast is \(Output.bytes(payload)) of JSON, stored as \(Output.bytes(storedBytes)) (LZ4 envelope)."
        )
        let speedups = steps.dropFirst().map {
            String(format: "%@ %.0fx", $0.servedBy, cold / max($0.milliseconds, 0.0001))
        }
        print("Faster than the API: " + speedups.joined(separator: ", ") + ".")
    }

    /// Starts this program again with `--child`: a new process, with an empty memory tier.
    private func runChild(path: String) async throws -> Step {
        let process = try SpawnedProcess(
            executable: URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path,
            arguments: ["demo", "--child", "--path", path, "--latency", "\(self.latency)"] + self.s3.arguments,
            environment: ProcessInfo.processInfo.environment, standardInput: .inherit, standardError: .inherit)
        let data = process.standardOutput!.readDataToEndOfFile()
        let status = process.waitUntilExit().status
        guard status == 0 else {
            throw CLIError(message: "the second demo process failed with status \(status)")
        }
        return try JSONDecoder().decode(Step.self, from: data)
    }

    private static func measure<T>(_ body: () async throws -> T) async throws -> (T, Double) {
        let clock = ContinuousClock()
        let start = clock.now
        let value = try await body()
        let elapsed = clock.now - start
        return (value, Double(elapsed.components.seconds) * 1e3 + Double(elapsed.components.attoseconds) * 1e-15)
    }

    static func simulatedForecast(city: String, days: Int) -> Forecast {
        let summaries = ["clear", "partly cloudy", "overcast", "light rain", "snow showers"]
        let hours = (0..<(days * 24)).map { (hour: Int) -> Forecast.Hour in
            let temperature: Double = Double((hour * 37) % 90) / 10 - 4
            let precipitation: Double = Double((hour * 13) % 7) / 10
            let windSpeed: Double = Double((hour * 17) % 120) / 10
            return Forecast.Hour(
                time: String(format: "2026-11-%02dT%02d:00:00Z", 25 + hour / 24, hour % 24),
                temperature: temperature,
                precipitation: precipitation,
                windSpeed: windSpeed,
                summary: summaries[(hour / 5) % summaries.count]
            )
        }
        return Forecast(city: city, days: days, hours: hours)
    }
}

/// Counts API calls across tasks.
final class CallCount: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func increment() { self.lock.withLock { self.count += 1 } }
    var value: Int { self.lock.withLock { self.count } }
}
