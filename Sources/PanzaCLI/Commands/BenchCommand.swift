import ArgumentParser
import Foundation
import Panza
import PanzaS3

struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract:
            "Run a workload (or replay a trace) across tier sizes and recommend the cheapest that meets your goals.",
        discussion: """
            Runs the same operations against a matrix of tier configurations (memory sizes × SQLite on/off \
            × S3 on/off when --s3-bucket is given) and reports, for each, hit ratios per tier, loader \
            calls, p50/p99/p99.9 latency, throughput and bytes. Writes an SVG chart of hit ratio and \
            latency against memory size. With --trace, replays a file recorded by \
            `TieredCache.Configuration.trace` instead of a synthetic workload.

            The recommendation is the cheapest configuration that meets --target-p99 and \
            --memory-budget: its cost counts the loader calls left (--loader-cost each), its memory \
            bound (--memory-cost per GiB) and the bytes it stored on disk (--disk-cost per GiB); \
            configurations within 1% of the cheapest go to the lowest p50, then p99.

            With --outage (and --ttl, so that entries expire), every loader call fails during that part \
            of the run, and each configuration runs without and with fail-safe: the SUCCESS column \
            shows how many reads still got a value; only configurations that serve as many as the \
            best are recommended.
            """
    )

    @OptionGroup var s3: S3Options

    @Option(help: "Distinct keys.") var keys = 5_000
    @Option(help: "Zipf skew of key popularity (0 uniform, 1 typical).") var skew = 1.0
    @Option(name: .customLong("value-size"), help: "Value bytes: fixed (1024) or a uniform range (256-4096).")
    var valueSize = "256-4096"
    @Option(name: .customLong("writes"), help: "Fraction of operations that are writes.") var writeFraction = 0.05
    @Option(name: .customLong("loader-latency"), help: "Loader latency in milliseconds.") var loaderLatency = 2.0
    @Option(name: .customLong("loader-cost"), help: "Cost of one loader call, to value the calls saved.")
    var loaderCost = 0.002
    @Option(name: .customLong("target-p99"), help: "The largest p99 latency accepted, in milliseconds.")
    var targetP99: Double?
    @Option(name: .customLong("memory-budget"), help: "The largest memory tier accepted, in bytes.")
    var memoryBudget: Int?
    @Option(name: .customLong("memory-cost"), help: "Cost of a GiB of memory tier, against --loader-cost.")
    var memoryCost = 0.05
    @Option(name: .customLong("disk-cost"), help: "Cost of a GiB stored in SQLite, against --loader-cost.")
    var diskCost = 0.001
    @Option(name: .customLong("ttl"), help: "Time to live of entries, in milliseconds (default: for ever).")
    var timeToLive: Double?
    @Option(
        help: ArgumentHelp(
            "An API outage: from-to, as fractions of the run (0.5-0.8), during which every loader call fails.",
            discussion: "Each configuration then runs twice, without and with fail-safe (Freshness.failSafeFor), "
                + "and the SUCCESS column shows the reads that got a value. Give --ttl so that entries expire."))
    var outage: String?
    @Option(help: "Tasks issuing operations at once.") var concurrency = 16
    @Option(help: "Operations per configuration.") var operations = 20_000
    @Option(help: "Random seed.") var seed: UInt64 = 42
    @Option(
        name: .customLong("memory-sizes"),
        help: "Memory tier sizes in bytes, comma-separated (0 for none); default: fractions of the working set.")
    var memorySizes: String?
    @Option(help: "Replay this access trace instead of a synthetic workload.") var trace: String?
    @Option(help: "Where to write the SVG chart.") var chart = "panza-bench.svg"
    @Flag(help: "Print machine-readable JSON.") var json = false

    struct Report: Encodable {
        var workload: BenchWorkload
        var source: String
        var results: [BenchResult]
        var recommendation: BenchResult?
        /// Why the recommendation (or why none), and each configuration's cost.
        var recommendationReason: String
        var costs: [Double]
        var chart: String
    }

    func validate() throws {
        guard BenchWorkload.ValueSizes(self.valueSize) != nil else {
            throw ValidationError("--value-size must be like 1024 or 256-4096")
        }
        guard self.keys > 0, self.operations > 0, self.concurrency > 0 else {
            throw ValidationError("--keys, --operations and --concurrency must be positive")
        }
        guard (0...1).contains(self.writeFraction) else { throw ValidationError("--writes must be between 0 and 1") }
        if let outage = self.outage, Self.outageRange(outage) == nil {
            throw ValidationError(
                "--outage must be like 0.5-0.8: two fractions of the run, the first not above the second")
        }
        guard self.timeToLive.map({ $0 > 0 }) ?? true else { throw ValidationError("--ttl must be positive") }
        guard self.targetP99.map({ $0 > 0 }) ?? true, self.memoryBudget.map({ $0 >= 0 }) ?? true,
            self.memoryCost >= 0, self.diskCost >= 0, self.loaderCost >= 0
        else {
            throw ValidationError("--target-p99 must be positive, --memory-budget and the costs not negative")
        }
    }

    func run() async throws {
        var workload = BenchWorkload(
            keys: self.keys,
            skew: self.skew,
            valueSizes: BenchWorkload.ValueSizes(self.valueSize)!,
            writeFraction: self.writeFraction,
            loaderLatencyMilliseconds: self.loaderLatency,
            loaderCost: self.loaderCost,
            concurrency: self.concurrency,
            operations: self.operations,
            seed: self.seed
        )
        workload.timeToLiveMilliseconds = self.timeToLive
        workload.outage = self.outage.flatMap(Self.outageRange)
        let operations: [BenchOperation]
        let source: String
        if let trace = self.trace {
            operations = try Self.operations(fromTrace: trace)
            workload.operations = operations.count
            workload.keys = Set(operations.map(\.key)).count
            source = "trace \(trace)"
        } else {
            operations = Self.operations(for: workload)
            source =
                "synthetic: \(workload.keys) keys, Zipf \(workload.skew), \(workload.valueSizes), \(Int(workload.writeFraction * 100))% writes"
        }

        // The working set, as the memory tier counts it: compressed envelopes.
        let distinct = Set(operations.map(\.key))
        let sampleSize = operations.first?.size ?? 1024
        let envelopeRatio =
            Double(
                BlobEnvelope(
                    contentType: .text, payload: Array(BenchWorkload.json(key: 1, size: sampleSize).utf8),
                    createdAtMilliseconds: 0
                ).encoded().count) / Double(sampleSize)
        let meanSize = Double(operations.reduce(0) { $0 + $1.size }) / Double(max(operations.count, 1))
        let workingSet = Int(Double(distinct.count) * meanSize * envelopeRatio)
        let memory: [Int?] =
            try self.memorySizes.map { text in
                try text.split(separator: ",").map { part -> Int? in
                    guard let bytes = Int(part.trimmingCharacters(in: .whitespaces)), bytes >= 0 else {
                        throw ValidationError("bad --memory-sizes")
                    }
                    return bytes == 0 ? nil : bytes
                }
            } ?? [
                nil, max(4096, workingSet / 50), max(4096, workingSet / 10), max(4096, workingSet / 2),
                max(4096, workingSet * 2),
            ]
        var setups: [TierSetup] = []
        for sqlite in [nil, max(1 << 20, workingSet * 4)] as [Int?] {
            for memoryBytes in memory where memoryBytes != nil || sqlite != nil {
                setups.append(TierSetup(memoryBytes: memoryBytes, sqliteBytes: sqlite, s3: false))
            }
        }
        if self.s3.resolvedBucket != nil {
            setups += memory.map { TierSetup(memoryBytes: $0, sqliteBytes: max(1 << 20, workingSet * 4), s3: true) }
        }
        if workload.outage != nil {
            setups = setups.flatMap { setup in
                var failSafe = setup
                failSafe.failSafe = true
                return [setup, failSafe]
            }
        }
        let outageOperations = workload.outage.map {
            Int($0.lowerBound * Double(operations.count))..<Int($0.upperBound * Double(operations.count))
        }
        if !self.json {
            print(
                "panza bench: \(source); \(operations.count) operations × \(setups.count) configurations; working set ≈ \(Output.bytes(workingSet))"
            )
        }

        let total = setups.count * operations.count
        let bar = ProgressBar(total: total, label: "benchmarking", enabled: !self.json)
        var results: [BenchResult] = []
        for (index, setup) in setups.enumerated() {
            let done = index * operations.count
            let result = try await BenchRunner.run(
                setup: setup, operations: operations, workload: workload, s3: self.s3, outage: outageOperations
            ) { progress in
                bar.update(done + progress)
            }
            results.append(result)
        }
        bar.update(total)
        bar.finish()

        let best = results.map(\.hitRatio).max() ?? 0
        let choice = BenchRecommendation.choose(
            from: results,
            goals: .init(
                targetP99Microseconds: self.targetP99.map { $0 * 1_000 }, memoryBudget: self.memoryBudget,
                loaderCost: self.loaderCost, memoryCostPerGiB: self.memoryCost, diskCostPerGiB: self.diskCost))
        let recommendation = choice.result
        let svg = BenchChart.svg(results: results, title: "panza bench — \(source)")
        try svg.write(toFile: self.chart, atomically: true, encoding: .utf8)

        if self.json {
            try Output.json(
                Report(
                    workload: workload, source: source, results: results, recommendation: recommendation,
                    recommendationReason: choice.reason, costs: choice.costs, chart: self.chart))
            return
        }
        Output.table(
            [
                [
                    "CONFIGURATION", "HIT %", "MEMORY %", "SQLITE %", "S3 %", "LOADS", "P50", "P99", "P99.9", "OPS/S",
                    "STORED",
                ] + (workload.outage == nil ? [] : ["SUCCESS %"])
            ]
                + results.map { result in
                    [
                        result.label,
                        String(format: "%.1f", result.hitRatio * 100),
                        String(format: "%.1f", (result.tierHitRatios["memory"] ?? 0) * 100),
                        result.tierHitRatios["sqlite"].map { String(format: "%.1f", $0 * 100) } ?? "-",
                        result.tierHitRatios["s3"].map { String(format: "%.1f", $0 * 100) } ?? "-",
                        "\(result.loaderCalls)",
                        Output.duration(.nanoseconds(Int64(result.p50Microseconds * 1000))),
                        Output.duration(.nanoseconds(Int64(result.p99Microseconds * 1000))),
                        Output.duration(.nanoseconds(Int64(result.p999Microseconds * 1000))),
                        String(format: "%.0f", result.throughput),
                        Output.bytes(result.bytesStored),
                    ] + (workload.outage == nil ? [] : [String(format: "%.1f", result.successRatio * 100)])
                }
        )
        if let recommendation {
            print(
                "\nRecommended: \(recommendation.label) — hit ratio \(String(format: "%.1f%%", recommendation.hitRatio * 100)) "
                    + "(best \(String(format: "%.1f%%", best * 100))), p99 "
                    + Output.duration(.nanoseconds(Int64(recommendation.p99Microseconds * 1000)))
                    + ": \(choice.reason)."
            )
            print(
                "It saves \(recommendation.savedLoaderCalls) of \(operations.count { !$0.isWrite }) loader calls"
                    + String(format: ", worth %.2f at %.4f a call.", recommendation.savedCost, workload.loaderCost)
            )
        }
        if recommendation == nil { print("\nNo recommendation: \(choice.reason).") }
        print("Chart: \(self.chart)")
    }

    /// `0.5-0.8` as a range of fractions of the run.
    static func outageRange(_ text: String) -> ClosedRange<Double>? {
        let parts = text.split(separator: "-").compactMap { Double($0.trimmingCharacters(in: .whitespaces)) }
        guard parts.count == 2, parts[0] >= 0, parts[1] <= 1, parts[0] <= parts[1] else { return nil }
        return parts[0]...parts[1]
    }

    /// The synthetic operations, the same for every configuration.
    static func operations(for workload: BenchWorkload) -> [BenchOperation] {
        let sampler = ZipfSampler(keys: workload.keys, skew: workload.skew)
        var generator = BenchRandom(seed: workload.seed)
        return (0..<workload.operations).map { _ in
            let key = sampler.sample(using: &generator)
            let isWrite = Double.random(in: 0..<1, using: &generator) < workload.writeFraction
            return BenchOperation(
                key: key, size: workload.valueSize(ofKey: key), isWrite: isWrite, loaderLatencyMicroseconds: nil)
        }
    }

    /// The operations of a recorded trace: keys by hash, sizes and loader latencies as recorded.
    static func operations(fromTrace path: String) throws -> [BenchOperation] {
        let records = try AccessTrace.read(path: path)
        guard !records.isEmpty else { throw CLIError(message: "the trace \(path) holds no accesses") }
        var indices: [UInt64: Int] = [:]
        var sizes: [UInt64: Int] = [:]
        for record in records where record.size > 0 { sizes[record.keyHash] = Int(record.size) }
        return records.map { record in
            let key =
                indices[record.keyHash]
                ?? {
                    let index = indices.count
                    indices[record.keyHash] = index
                    return index
                }()
            return BenchOperation(
                key: key,
                size: max(64, sizes[record.keyHash] ?? 1024),
                isWrite: false,
                loaderLatencyMicroseconds: record.source == .loader ? Int(record.latency) : nil
            )
        }
    }
}
