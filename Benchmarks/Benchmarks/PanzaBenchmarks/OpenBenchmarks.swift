import Benchmark
import Foundation
import Panza

/// Opening a SQLite tier (issue 13: open time independent of size), beside opening an empty file
/// in the same run:
///
///   sqlite.open.entries-1m   a file of 1,000,000 entries (100-byte values), 10% of them expired
///   sqlite.open.empty        a new file
///
/// Each iteration opens a fresh copy of the file (the copy is not measured), so that work an open
/// does once (reclaiming expired entries) is paid by every iteration.
let openBenchmarks: @Sendable () -> Void = {
    let configuration = Benchmark.Configuration(
        metrics: [.wallClock], scalingFactor: .one, maxDuration: .seconds(20), maxIterations: 8,
        thresholds: latencyThresholds)

    Benchmark("sqlite.open.entries-1m", configuration: configuration) { benchmark in
        let source = try await OpenFixture.shared.largeFile()
        let path = Workload.temporaryPath("open-copy.sqlite")
        try FileManager.default.copyItem(atPath: source, toPath: path)
        benchmark.startMeasurement()
        let tier = try await SQLiteTier.open(configuration: .init(path: path, maxBytes: 4 << 30))
        benchmark.stopMeasurement()
        await tier.close()
    }

    Benchmark("sqlite.open.empty", configuration: configuration) { benchmark in
        let path = Workload.temporaryPath("open-empty.sqlite")
        benchmark.startMeasurement()
        let tier = try await SQLiteTier.open(configuration: .init(path: path, maxBytes: 4 << 30))
        benchmark.stopMeasurement()
        await tier.close()
    }
}

/// The 1,000,000-entry file, built once per run.
actor OpenFixture {
    static let shared = OpenFixture()
    private var path: String?

    func largeFile() async throws -> String {
        if let path { return path }
        let path = Workload.temporaryPath("open-source.sqlite")
        let tier = try await SQLiteTier.open(configuration: .init(path: path, maxBytes: 4 << 30))
        let now = Int64(Date().timeIntervalSince1970 * 1_000)
        let payload = Array(repeating: UInt8(ascii: "x"), count: 100)
        for batch in 0..<100 {
            var operations: [CacheTierOperation] = []
            operations.reserveCapacity(10_000)
            for index in 0..<10_000 {
                let number = batch * 10_000 + index
                // One in ten expired a minute ago.
                let expired = number % 10 == 0
                let envelope = BlobEnvelope(
                    contentType: .bytes, payload: payload, createdAtMilliseconds: expired ? now - 120_000 : now,
                    timeToLiveMilliseconds: expired ? 60_000 : 0
                ).encoded(compress: false)
                operations.append(
                    .store(
                        key: CacheKey(rawValue: "key-\(number)"), blob: envelope,
                        expiresAtMilliseconds: expired ? now - 60_000 : nil))
            }
            try await tier.apply(operations)
        }
        await tier.close()
        self.path = path
        return path
    }
}
