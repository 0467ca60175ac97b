import AsyncHTTPClient
import Benchmark
import Foundation
import NIOCore
import Panza
import PanzaS3

/// S3 benchmarks, when a server is configured (scripts/benchmark starts SeaweedFS):
///
///   Panza                                        baselines
///   signed GET, 1 KiB, concurrency 32            unsigned AsyncHTTPClient GET of the same objects;
///                                                boto3, 32 threads, signed GETs
///   set with an S3 tier (write-behind upload)    set without one
let s3Benchmarks: @Sendable () -> Void = {
    let environment = ProcessInfo.processInfo.environment
    guard let endpoint = environment["PANZA_TEST_S3_ENDPOINT"], let access = environment["PANZA_TEST_S3_ACCESS_KEY"],
        let secret = environment["PANZA_TEST_S3_SECRET_KEY"]
    else {
        print("S3 benchmarks skipped: no PANZA_TEST_S3_ENDPOINT (run scripts/benchmark, which starts SeaweedFS)")
        return
    }
    let credentials = S3Credentials(accessKeyID: access, secretAccessKey: secret)
    let bucket = "panza-bench-public"  // the server lets anonymous clients read this bucket only
    let objectCount = 200
    let concurrency = 32

    Benchmark("s3.get.signed.1kib.concurrency-32") { benchmark in
        let client = try await S3Fixtures.shared.client(
            endpoint: endpoint, bucket: bucket, credentials: credentials, objects: objectCount)
        let iterations = benchmark.scaledIterations.count
        benchmark.startMeasurement()
        try await runConcurrently(iterations: iterations, tasks: concurrency) { task, index in
            blackHole(try await client.get(key: "objects/\((task &* 31 &+ index) % objectCount)"))
        }
    }

    Benchmark("baseline.http.get.unsigned.1kib.concurrency-32") { benchmark in
        _ = try await S3Fixtures.shared.client(
            endpoint: endpoint, bucket: bucket, credentials: credentials, objects: objectCount)
        let http = S3Fixtures.shared.unsignedClient
        let iterations = benchmark.scaledIterations.count
        benchmark.startMeasurement()
        try await runConcurrently(iterations: iterations, tasks: concurrency) { task, index in
            let request = HTTPClientRequest(url: "\(endpoint)/\(bucket)/objects/\((task &* 31 &+ index) % objectCount)")
            let response = try await http.execute(request, timeout: .seconds(30))
            precondition(response.status == .ok, "unsigned GET failed: \(response.status)")
            blackHole(try await response.body.collect(upTo: 1 << 20))
        }
    }

    for operation in ["GET", "PUT"] {
        Benchmark(
            "baseline.boto3.\(operation.lowercased()).threads-32.requests-per-second",
            configuration: PythonBaseline.configuration("requests/s")
        ) { benchmark in
            _ = try await S3Fixtures.shared.client(
                endpoint: endpoint, bucket: bucket, credentials: credentials, objects: objectCount)
            guard
                let rate = PythonBaseline.run(
                    "boto3_get.py", [bucket, "objects", "\(objectCount)", "5", operation.lowercased()])
            else { return }
            benchmark.measurement(PythonBaseline.metric("requests/s"), Int(rate.rounded()))
        }
    }

    Benchmark("s3.put.signed.1kib.concurrency-32") { benchmark in
        let client = try await S3Fixtures.shared.client(
            endpoint: endpoint, bucket: bucket, credentials: credentials, objects: objectCount)
        let iterations = benchmark.scaledIterations.count
        let body = Array(Workload.json(seed: 5).utf8)
        benchmark.startMeasurement()
        try await runConcurrently(iterations: iterations, tasks: concurrency) { task, index in
            try await client.put(key: "objects-put/\((task &* 31 &+ index) % objectCount)", body: body)
        }
    }

    for withS3 in [false, true] {
        Benchmark(
            "set.latency.write-behind.\(withS3 ? "with-s3" : "without-s3")",
            configuration: .init(
                metrics: [.wallClock], scalingFactor: .one, maxDuration: .seconds(3), maxIterations: 50_000,
                thresholds: latencyThresholds)
        ) { benchmark in
            let cache = try await S3Fixtures.shared.setCache(
                withS3: withS3, endpoint: endpoint, credentials: credentials)
            let index = S3Fixtures.shared.nextIndex()
            let value = S3Fixtures.shared.value
            benchmark.startMeasurement()
            try await cache.set(value, forKey: "latency-\(index % 20_000)")
            benchmark.stopMeasurement()
        }
    }
}

/// Clients and caches shared by the iterations of the S3 benchmarks.
final class S3Fixtures: @unchecked Sendable {
    static let shared = S3Fixtures()
    let unsignedClient = HTTPClient(
        eventLoopGroup: HTTPClient.defaultEventLoopGroup,
        configuration: {
            var configuration = HTTPClient.Configuration()
            configuration.connectionPool = .init(
                idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 32)
            return configuration
        }()
    )
    let value = Workload.json(seed: 3)
    private let lock = NSLock()
    private var signed: S3Client?
    private var caches: [Bool: TieredCache] = [:]
    private var counter = 0

    func nextIndex() -> Int {
        self.lock.withLock {
            self.counter += 1
            return self.counter
        }
    }

    func client(endpoint: String, bucket: String, credentials: S3Credentials, objects: Int) async throws -> S3Client {
        if let signed = self.lock.withLock({ self.signed }) { return signed }
        let client = try S3Client(
            configuration: .init(bucket: bucket, endpoint: endpoint, credentials: credentials, maxConnections: 32))
        try await client.createBucket()
        for index in 0..<objects {
            try await client.put(key: "objects/\(index)", body: Array(Workload.json(seed: index).utf8))
        }
        self.lock.withLock { self.signed = client }
        return client
    }

    func setCache(withS3: Bool, endpoint: String, credentials: S3Credentials) async throws -> TieredCache {
        if let cache = self.lock.withLock({ self.caches[withS3] }) { return cache }
        var configuration = TieredCache.Configuration()
        configuration.memory = .init(maxEntries: 100_000, maxBytes: 256 << 20)
        configuration.sqlite = .init(path: Workload.temporaryPath("set-s3-\(withS3).sqlite"))
        if withS3 {
            configuration.remote = try S3Tier(
                configuration: .init(bucket: "panza-bench-uploads", endpoint: endpoint, credentials: credentials))
        }
        configuration.modes = CacheModes()
        let cache = try await TieredCache(configuration: configuration)
        self.lock.withLock { self.caches[withS3] = cache }
        return cache
    }
}
