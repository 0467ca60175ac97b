import AsyncHTTPClient
import Benchmark
import Foundation
import NIOCore
import Panza
import PanzaS3

/// Large values (issue 9), each figure beside its raw baseline in the same run:
///
///   Panza                                     baseline
///   large.sqlite.write.<size>  (set + flush)  baseline.sqlite-c.blob-write.<size>  (one INSERT, C API)
///   large.sqlite.read.<size>   (value(forKey:)) baseline.sqlite-c.blob-read.<size>   (one SELECT, copied out)
///   large.s3.read.<size>       (value(forKey:)) baseline.http.get.unsigned.<size>    (AsyncHTTPClient, one GET)
///   large.s3.write.<size>      (set + flush)  baseline.s3-client.put.<size>        (one signed PUT/multipart)
///
/// Values are seeded random bytes (incompressible, the worst case for the envelope); memory tier
/// off, so every read goes to the tier measured. Sizes: 64 KiB (issue 13: a SQLite hit of that
/// size at least as fast as the raw C read, which maps no memory), 1 MiB, 64 MiB, 512 MiB.
let largeValueBenchmarks: @Sendable () -> Void = {
    let sizes: [(bytes: Int, label: String)] = [
        (64 << 10, "64kib"), (1 << 20, "1mib"), (64 << 20, "64mib"), (512 << 20, "512mib"),
    ]
    let environment = ProcessInfo.processInfo.environment
    for (bytes, label) in sizes {
        let configuration = Benchmark.Configuration(
            metrics: [.wallClock, .peakMemoryResident], scalingFactor: .one, maxDuration: .seconds(10),
            maxIterations: bytes >= 512 << 20 ? 3 : (bytes >= 64 << 20 ? 10 : 200),
            thresholds: latencyThresholds)
        // A 64 KiB read takes microseconds, less than the harness's own cost around one
        // measurement of an async call: its reads are measured a thousand at a time, the figures
        // per read (as the 1 KiB hits are).
        let readConfiguration =
            bytes == 64 << 10
            ? Benchmark.Configuration(
                metrics: [.wallClock, .throughput, .peakMemoryResident], scalingFactor: .kilo,
                maxDuration: .seconds(10), maxIterations: 200, thresholds: latencyThresholds)
            : configuration

        Benchmark("large.sqlite.write.\(label)", configuration: configuration) { benchmark in
            let value = LargeValues.shared.value(bytes: bytes)
            let cache = try await LargeValues.sqliteCache("write-\(label)")
            benchmark.startMeasurement()
            try await cache.set(value, forKey: "v")
            try await cache.flush()
            benchmark.stopMeasurement()
            try await cache.close()
        }

        Benchmark("baseline.sqlite-c.blob-write.\(label)", configuration: configuration) { benchmark in
            let value = Array(LargeValues.shared.value(bytes: bytes))
            let sqlite = Baseline.RawSQLite(path: Workload.temporaryPath("large-raw-write-\(label).sqlite"))
            benchmark.startMeasurement()
            sqlite.insertBatch(keys: ["v"], value: value)
            benchmark.stopMeasurement()
        }

        Benchmark("large.sqlite.read.\(label)", configuration: readConfiguration) { benchmark in
            let cache = try await LargeValues.shared.sqliteReadCache(bytes: bytes, label: label)
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                let value = try await cache.value(forKey: "v", as: Data.self)
                precondition(value?.count == bytes, "the large value was not read back")
            }
            benchmark.stopMeasurement()
        }

        Benchmark("baseline.sqlite-c.blob-read.\(label)", configuration: readConfiguration) { benchmark in
            let sqlite = LargeValues.shared.rawSQLite(bytes: bytes, label: label)
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                blackHole(sqlite.lookup("v"))
            }
            benchmark.stopMeasurement()
        }

        guard let endpoint = environment["PANZA_TEST_S3_ENDPOINT"],
            let access = environment["PANZA_TEST_S3_ACCESS_KEY"],
            let secret = environment["PANZA_TEST_S3_SECRET_KEY"]
        else { continue }
        let credentials = S3Credentials(accessKeyID: access, secretAccessKey: secret)
        let bucket = "panza-bench-public"  // anonymous clients may read it (the unsigned baseline)

        Benchmark("large.s3.write.\(label)", configuration: configuration) { benchmark in
            let value = LargeValues.shared.value(bytes: bytes)
            let cache = try await LargeValues.s3Cache(endpoint: endpoint, bucket: bucket, credentials: credentials)
            benchmark.startMeasurement()
            try await cache.set(value, forKey: "write-\(label)")
            try await cache.flush()
            benchmark.stopMeasurement()
            try await cache.close()
        }

        Benchmark("baseline.s3-client.put.\(label)", configuration: configuration) { benchmark in
            let body = Array(LargeValues.shared.value(bytes: bytes))
            let client = try S3Client(
                configuration: .init(bucket: bucket, endpoint: endpoint, credentials: credentials))
            try await client.createBucket()
            benchmark.startMeasurement()
            try await client.put(key: "large-raw/\(label)", body: body)
            benchmark.stopMeasurement()
            try await client.shutdown()
        }

        Benchmark("large.s3.read.\(label)", configuration: configuration) { benchmark in
            let cache = try await LargeValues.shared.s3ReadCache(
                bytes: bytes, label: label, endpoint: endpoint, bucket: bucket, credentials: credentials)
            benchmark.startMeasurement()
            let value = try await cache.value(forKey: "read-\(label)", as: Data.self)
            benchmark.stopMeasurement()
            precondition(value?.count == bytes, "the large value was not read back from S3")
        }

        Benchmark("baseline.http.get.unsigned.\(label)", configuration: configuration) { benchmark in
            // The object the Panza read fetches, by its URL (prefix "large", key "read-<size>").
            _ = try await LargeValues.shared.s3ReadCache(
                bytes: bytes, label: label, endpoint: endpoint, bucket: bucket, credentials: credentials)
            let http = S3Fixtures.shared.unsignedClient
            benchmark.startMeasurement()
            let response = try await http.execute(
                HTTPClientRequest(url: "\(endpoint)/\(bucket)/large/_keys/read-\(label)"), timeout: .seconds(300))
            precondition(response.status == .ok, "unsigned GET failed: \(response.status)")
            blackHole(try await response.body.collect(upTo: 1 << 30))
            benchmark.stopMeasurement()
        }
    }
}

/// Values and prepared files shared by the iterations of the large-value benchmarks.
final class LargeValues: @unchecked Sendable {
    static let shared = LargeValues()
    private let lock = NSLock()
    private var values: [Int: Data] = [:]
    private var readCaches: [String: TieredCache] = [:]
    private var rawFiles: [Int: Baseline.RawSQLite] = [:]

    /// `bytes` seeded random bytes.
    func value(bytes: Int) -> Data {
        self.lock.withLock {
            if let value = self.values[bytes] { return value }
            var random = SystemRandomNumberGenerator()
            var data = Data(count: bytes)
            data.withUnsafeMutableBytes { raw in
                for offset in stride(from: 0, to: raw.count, by: 8) {
                    raw.storeBytes(of: random.next() as UInt64, toByteOffset: offset, as: UInt64.self)
                }
            }
            self.values[bytes] = data
            return data
        }
    }

    static func sqliteCache(_ name: String) async throws -> TieredCache {
        var configuration = TieredCache.Configuration()
        configuration.memory = nil
        configuration.sqlite = .init(path: Workload.temporaryPath("large-\(name).sqlite"), maxBytes: 8 << 30)
        configuration.modes = CacheModes()
        return try await TieredCache(configuration: configuration)
    }

    static func s3Cache(endpoint: String, bucket: String, credentials: S3Credentials) async throws -> TieredCache {
        var configuration = TieredCache.Configuration()
        configuration.memory = nil
        configuration.remote = try S3Tier(
            configuration: .init(bucket: bucket, prefix: "large", endpoint: endpoint, credentials: credentials))
        configuration.remoteReadTimeout = .seconds(300)
        configuration.remoteBreaker.skipsTiersSlowerThanLoads = false
        configuration.modes = CacheModes()
        return try await TieredCache(configuration: configuration)
    }

    func sqliteReadCache(bytes: Int, label: String) async throws -> TieredCache {
        if let cache = self.lock.withLock({ self.readCaches["sqlite-\(label)"] }) { return cache }
        let cache = try await Self.sqliteCache("read-\(label)")
        try await cache.set(self.value(bytes: bytes), forKey: "v")
        try await cache.flush()
        self.lock.withLock { self.readCaches["sqlite-\(label)"] = cache }
        return cache
    }

    func s3ReadCache(
        bytes: Int, label: String, endpoint: String, bucket: String, credentials: S3Credentials
    ) async throws -> TieredCache {
        if let cache = self.lock.withLock({ self.readCaches["s3-\(label)"] }) { return cache }
        let cache = try await Self.s3Cache(endpoint: endpoint, bucket: bucket, credentials: credentials)
        try await cache.set(self.value(bytes: bytes), forKey: "read-\(label)")
        try await cache.flush()
        self.lock.withLock { self.readCaches["s3-\(label)"] = cache }
        return cache
    }

    func rawSQLite(bytes: Int, label: String) -> Baseline.RawSQLite {
        self.lock.withLock {
            if let sqlite = self.rawFiles[bytes] { return sqlite }
            let sqlite = Baseline.RawSQLite(path: Workload.temporaryPath("large-raw-read-\(label).sqlite"))
            self.rawFiles[bytes] = sqlite
            return sqlite
        }.prepared(value: self.value(bytes: bytes))
    }
}

extension Baseline.RawSQLite {
    /// Stores `value` under "v" once.
    func prepared(value: Data) -> Baseline.RawSQLite {
        if self.lookup("v")?.count != value.count { self.insertBatch(keys: ["v"], value: Array(value)) }
        return self
    }
}
