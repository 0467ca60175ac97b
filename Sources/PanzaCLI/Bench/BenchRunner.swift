import Foundation
import Panza
import PanzaS3
import Synchronization

/// One tier configuration of the matrix.
struct TierSetup: Sendable, Codable, Hashable {
    /// Memory tier bytes; `nil` for no memory tier.
    var memoryBytes: Int?
    /// SQLite tier bytes; `nil` for no SQLite tier.
    var sqliteBytes: Int?
    var s3: Bool
    /// Whether calls answer a failed load with a stale entry (``Freshness/failSafeFor``).
    var failSafe = false

    var label: String {
        let memory = self.memoryBytes.map { "mem \(Output.bytes($0))" } ?? "no mem"
        let sqlite = self.sqliteBytes.map { "sqlite \(Output.bytes($0))" } ?? "no sqlite"
        return "\(memory), \(sqlite)\(self.s3 ? ", s3" : "")\(self.failSafe ? ", fail-safe" : "")"
    }
}

/// What one run measured.
struct BenchResult: Sendable, Codable {
    var setup: TierSetup
    var label: String
    var operations: Int
    var seconds: Double
    var throughput: Double
    var hitRatio: Double
    var tierHitRatios: [String: Double]
    var loaderCalls: Int
    var p50Microseconds: Double
    var p99Microseconds: Double
    var p999Microseconds: Double
    var bytesStored: Int
    var bytesWritten: Int
    var bytesRead: Int
    var s3Requests: Int
    var savedLoaderCalls: Int
    var savedCost: Double
    /// Reads that returned a value (the others got the loader's error: an injected outage).
    var successRatio: Double
}

/// One operation to run: a read of key `key` (memoized), or a write.
struct BenchOperation: Sendable {
    var key: Int
    var size: Int
    var isWrite: Bool
    /// For replayed traces: the loader's latency as recorded, if it ran.
    var loaderLatencyMicroseconds: Int?
}

/// Runs operations against one tier setup and measures them.
enum BenchRunner {
    static func run(
        setup: TierSetup,
        operations: [BenchOperation],
        workload: BenchWorkload,
        s3: S3Options,
        outage: Range<Int>? = nil,
        progress: @escaping @Sendable (Int) -> Void
    ) async throws -> BenchResult {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("panza-bench-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }

        var configuration = TieredCache.Configuration()
        configuration.memory = setup.memoryBytes.map { .init(maxEntries: 1_000_000, maxBytes: $0) }
        configuration.sqlite = setup.sqliteBytes.map {
            .init(path: folder.appendingPathComponent("bench.sqlite").path, maxBytes: $0)
        }
        if setup.s3, var tier = try s3.makeTier()?.configuration {
            tier.prefix += "/bench-\(UUID().uuidString.prefix(8))"
            configuration.remote = try S3Tier(configuration: tier)
        }
        configuration.modes = CacheModes()
        let cache = try await TieredCache(configuration: configuration)
        let latency = workload.loaderLatencyMilliseconds
        // The key is the key index alone: size, recorded latency and the outage only shape the
        // loader's answer.
        let load = cache.memoize(
            id: "bench", timeToLive: workload.timeToLiveMilliseconds.map { .microseconds(Int64($0 * 1000)) },
            freshness: setup.failSafe ? Freshness(failSafeFor: .seconds(86_400 * 365)) : nil,
            key: { (key: Int, _: Int, _: Int, _: Bool) in "\(key)" }
        ) { (key: Int, size: Int, recordedMicroseconds: Int, down: Bool) async throws -> String in
            let micros = recordedMicroseconds >= 0 ? Double(recordedMicroseconds) : latency * 1000
            if micros > 0 { try await Task.sleep(for: .microseconds(Int64(micros))) }
            if down { throw BenchOutage() }
            return BenchWorkload.json(key: key, size: size)
        }
        let failedReads = OperationCursor()

        let next = OperationCursor()
        let clock = ContinuousClock()
        let start = clock.now
        let latencies = try await withThrowingTaskGroup(of: [Double].self) { group in
            for _ in 0..<max(1, workload.concurrency) {
                group.addTask {
                    var measured: [Double] = []
                    while true {
                        let index = next.take()
                        guard index < operations.count else { break }
                        let operation = operations[index]
                        let begin = clock.now
                        if operation.isWrite {
                            try await cache.set(
                                BenchWorkload.json(key: operation.key, size: operation.size),
                                forKey: try load.key(operation.key, operation.size, -1, false).rawValue)
                        } else {
                            do {
                                _ = try await load(
                                    operation.key, operation.size, operation.loaderLatencyMicroseconds ?? -1,
                                    outage?.contains(index) ?? false)
                            } catch is BenchOutage {
                                _ = failedReads.take()
                            }
                        }
                        let elapsed = clock.now - begin
                        measured.append(
                            Double(elapsed.components.seconds) * 1e6 + Double(elapsed.components.attoseconds) * 1e-12)
                        if index % 500 == 0 { progress(index) }
                    }
                    return measured
                }
            }
            var all: [Double] = []
            for try await measured in group { all += measured }
            return all
        }
        let elapsed = clock.now - start
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
        try await cache.flush()
        let statistics = cache.statistics
        var bytesStored = statistics.memoryBytes
        if let sqlite = cache.tiers.first as? SQLiteTier { bytesStored += try await sqlite.usage().bytes }
        var s3Requests = 0
        if let s3Tier = cache.tiers.last as? S3Tier {
            let counts = statistics.tiers["s3"] ?? CacheStatistics.TierCounts()
            s3Requests = counts.hits + counts.misses + statistics.writes
            try? await s3Tier.apply([.removeAll])  // leave the bucket as it was
        }
        try await cache.close()

        let sorted = latencies.sorted()
        func percentile(_ p: Double) -> Double {
            sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int((Double(sorted.count) * p).rounded(.down)))]
        }
        let reads = operations.count { !$0.isWrite }
        let hits = max(0, reads - statistics.loads)
        var tierRatios: [String: Double] = ["memory": reads == 0 ? 0 : Double(statistics.memory.hits) / Double(reads)]
        for (name, counts) in statistics.tiers {
            tierRatios[name] = reads == 0 ? 0 : Double(counts.hits) / Double(reads)
        }
        return BenchResult(
            setup: setup,
            label: setup.label,
            operations: operations.count,
            seconds: seconds,
            throughput: Double(operations.count) / max(seconds, 1e-9),
            hitRatio: reads == 0 ? 0 : Double(hits) / Double(reads),
            tierHitRatios: tierRatios,
            loaderCalls: statistics.loads,
            p50Microseconds: percentile(0.5),
            p99Microseconds: percentile(0.99),
            p999Microseconds: percentile(0.999),
            bytesStored: bytesStored,
            bytesWritten: statistics.bytesWritten,
            bytesRead: statistics.bytesRead,
            s3Requests: s3Requests,
            savedLoaderCalls: hits,
            savedCost: Double(hits) * workload.loaderCost,
            successRatio: reads == 0 ? 1 : Double(reads - failedReads.taken) / Double(reads)
        )
    }
}

/// The error of a loader call during an injected outage (`panza bench --outage`).
struct BenchOutage: Error, CustomStringConvertible {
    var description: String { "the API is down (injected outage)" }
}

/// Hands out operation indices to the tasks of a run (or counts, from any task).
final class OperationCursor: Sendable {
    private let next = Atomic<Int>(0)
    func take() -> Int { self.next.add(1, ordering: .relaxed).oldValue }
    /// How many were taken.
    var taken: Int { self.next.load(ordering: .relaxed) }
}
