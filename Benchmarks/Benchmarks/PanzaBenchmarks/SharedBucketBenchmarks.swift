import Benchmark
import Crypto
import Foundation
import Panza
import PanzaS3

/// The cost of trusting a shared bucket (issue 11), each figure beside a bare SHA-256 of the same
/// bytes in the same run:
///
///   Panza                                          baseline
///   shared.sign.<size>     (HMAC-SHA256 signature)   baseline.sha256.<size>
///   shared.verify.<size>   (check and strip)         baseline.sha256.<size>
///   shared.encrypt.<size>  (AES-256-GCM, signed)     baseline.sha256.<size>
///   shared.decrypt.<size>  (verify and decrypt)      baseline.sha256.<size>
///
/// The envelope is built once (seeded random bytes, incompressible); no request is sent.
let sharedBucketBenchmarks: @Sendable () -> Void = {
    let sizes: [(bytes: Int, label: String)] = [(1 << 10, "1kib"), (64 << 10, "64kib"), (1 << 20, "1mib")]
    let signingKey = try! S3SigningKey(id: "bench", secret: Array(repeating: 7, count: 32))
    let encryptionKey = try! S3EncryptionKey(id: "bench", bytes: Array(repeating: 9, count: 32))
    func tier(encrypted: Bool) -> S3Tier {
        var configuration = S3Tier.Configuration(
            bucket: "bench", prefix: "v1", endpoint: "http://127.0.0.1:9",
            credentials: S3Credentials(accessKeyID: "AKIDBENCH", secretAccessKey: "secret"))
        configuration.signingKeys = [signingKey]
        configuration.encryptionKeys = encrypted ? [encryptionKey] : []
        return try! S3Tier(configuration: configuration)
    }
    let signing = tier(encrypted: false)
    let encrypting = tier(encrypted: true)
    let key = CacheKey(namespace: "f", rawValue: "f/" + String(repeating: "ab", count: 32))
    for (bytes, label) in sizes {
        var generator = SystemRandomNumberGenerator()
        let payload = (0..<bytes).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        let envelope = BlobEnvelope(contentType: .bytes, payload: payload, createdAtMilliseconds: 1).encoded()
        let signed = try! signing.object(sealing: envelope, forKey: key)
        let sealed = try! encrypting.object(sealing: envelope, forKey: key)
        let configuration = Benchmark.Configuration(
            metrics: [.wallClock, .throughput], scalingFactor: .one, maxDuration: .seconds(2))

        Benchmark("baseline.sha256.\(label)", configuration: configuration) { benchmark in
            for _ in benchmark.scaledIterations { blackHole(SHA256.hash(data: envelope)) }
        }
        Benchmark("shared.sign.\(label)", configuration: configuration) { benchmark in
            for _ in benchmark.scaledIterations { blackHole(try signing.object(sealing: envelope, forKey: key)) }
        }
        Benchmark("shared.verify.\(label)", configuration: configuration) { benchmark in
            for _ in benchmark.scaledIterations { blackHole(try signing.envelope(opening: signed, forKey: key)) }
        }
        Benchmark("shared.encrypt.\(label)", configuration: configuration) { benchmark in
            for _ in benchmark.scaledIterations { blackHole(try encrypting.object(sealing: envelope, forKey: key)) }
        }
        Benchmark("shared.decrypt.\(label)", configuration: configuration) { benchmark in
            for _ in benchmark.scaledIterations { blackHole(try encrypting.envelope(opening: sealed, forKey: key)) }
        }
    }
}
