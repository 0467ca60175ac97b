import Benchmark
import Foundation
import Panza

#if canImport(Glibc)
    import Glibc
#endif

/// Whether SQLite lookups on the caller's thread starve other tasks when the file is cold (issue 13):
/// 8 tasks look up random keys of a 250 MB file whose pages were just evicted from the page cache
/// (`posix_fadvise(DONTNEED)`), while a ninth task sleeps 1 ms at a time and records how late it
/// wakes up. The p99 of that lateness, in microseconds, with lookups on the caller's thread
/// (`inlineReaderCount` 2, and 1, the default on 2 cores) and without (0):
///
///   sqlite.cold.tick-lateness.inline-2, .inline-1      sqlite.cold.tick-lateness.inline-0
let coldReadBenchmarks: @Sendable () -> Void = {
    let metric = BenchmarkMetric.custom("tick lateness p99 (µs)", polarity: .prefersSmaller, useScalingFactor: false)
    for inline in [2, 1, 0] {
        Benchmark(
            "sqlite.cold.tick-lateness.inline-\(inline)",
            configuration: .init(
                metrics: [metric, .wallClock], scalingFactor: .one, maxDuration: .seconds(30), maxIterations: 5,
                thresholds: [metric: tolerance])
        ) { benchmark in
            let path = try await ColdFixture.shared.file()
            ColdFixture.evictFromPageCache(path)
            var configuration = SQLiteTier.Configuration(path: path, maxBytes: 4 << 30, readerCount: 1)
            configuration.inlineReaderCount = inline
            configuration.expiredReclaimInterval = nil
            let tier = try await SQLiteTier.open(configuration: configuration)
            let lateness = LatenessRecorder()
            benchmark.startMeasurement()
            let ticker = Task {
                while !Task.isCancelled {
                    let start = ContinuousClock.now
                    try? await Task.sleep(for: .milliseconds(1))
                    lateness.record(ContinuousClock.now - start - .milliseconds(1))
                }
            }
            try await runConcurrently(iterations: 8 * 2_000, tasks: 8) { task, index in
                let key = (task &* 7919 &+ (index &+ 1) &* 104_729) % ColdFixture.entries
                blackHole(try await tier.blob(forKey: CacheKey(rawValue: "key-\(key)")))
            }
            ticker.cancel()
            benchmark.stopMeasurement()
            benchmark.measurement(metric, lateness.p99Microseconds)
            await tier.close()
        }
    }
}

/// Sleep overshoots of the ticker.
final class LatenessRecorder: @unchecked Sendable {
    private let lock = NSLock()
    private var samples: [Duration] = []

    func record(_ lateness: Duration) { self.lock.withLock { self.samples.append(lateness) } }

    var p99Microseconds: Int {
        self.lock.withLock {
            let sorted = self.samples.sorted()
            guard !sorted.isEmpty else { return 0 }
            let p99 = sorted[min(sorted.count - 1, sorted.count * 99 / 100)]
            return Int(p99.components.seconds * 1_000_000 + p99.components.attoseconds / 1_000_000_000_000)
        }
    }
}

/// A 250 MB file (200,000 entries of ~1.2 KiB), built once per run.
actor ColdFixture {
    static let shared = ColdFixture()
    static let entries = 200_000
    private var path: String?

    func file() async throws -> String {
        if let path { return path }
        let path = Workload.temporaryPath("cold.sqlite")
        let tier = try await SQLiteTier.open(configuration: .init(path: path, maxBytes: 4 << 30))
        for batch in 0..<(Self.entries / 10_000) {
            let operations = (0..<10_000).map { index -> CacheTierOperation in
                let number = batch * 10_000 + index
                let envelope = BlobEnvelope(
                    contentType: .text, payload: Array(Workload.json(seed: number).utf8), createdAtMilliseconds: 1
                ).encoded(compress: false)
                return .store(key: CacheKey(rawValue: "key-\(number)"), blob: envelope, expiresAtMilliseconds: nil)
            }
            try await tier.apply(operations)
        }
        await tier.close()
        self.path = path
        return path
    }

    /// Drops the file's pages from the page cache, so that the next reads go to the disk.
    static func evictFromPageCache(_ path: String) {
        for file in [path, path + "-wal"] {
            let descriptor = open(file, O_RDONLY)
            guard descriptor >= 0 else { continue }
            fsync(descriptor)
            _ = posix_fadvise(descriptor, 0, 0, Int32(POSIX_FADV_DONTNEED))
            close(descriptor)
        }
    }
}
