import Foundation
import Panza
import PanzaS3
import PanzaTestSupport
import Synchronization

/// `large DB write|read MIB SEED [ENDPOINT BUCKET]`: one large memoized value through every tier,
/// in its own process, so that its peak memory is its own.
enum LargeValueWorker {
    static func run(arguments: [String]) async throws {
        let path = arguments[0]
        let writes = arguments[1] == "write"
        let size = Int(arguments[2])! << 20
        let seed = UInt64(arguments[3])!
        var configuration = TieredCache.Configuration()
        configuration.memory = .init(maxEntries: 100, maxBytes: 64 << 20)
        configuration.sqlite = .init(path: path, maxBytes: 4 << 30)
        configuration.modes = CacheModes(environment: nil)
        if arguments.count >= 6 {
            configuration.remote = try S3Tier(
                configuration: testS3Tier(endpoint: arguments[4], bucket: arguments[5], prefix: "large"))
            configuration.remoteReadTimeout = .seconds(120)
        }
        let cache = try await TieredCache(configuration: configuration)
        let loads = Atomic<Int>(0)
        let document = cache.memoize(id: "document") { (name: String) async throws -> Data in
            loads.add(1, ordering: .relaxed)
            guard writes else { throw LargeValueError(message: "the loader ran: the value was not found in a tier") }
            return Self.bytes(count: size, seed: seed)
        }
        let value = try await document("report.pdf")
        guard value.count == size, Self.matches(value, seed: seed) else {
            throw LargeValueError(message: "the value read back differs from the one written (\(value.count) bytes)")
        }
        try await cache.flush()
        try await cache.close()
        print("ok \(loads.load(ordering: .relaxed)) \(Self.peakResidentBytes())")
    }

    /// `count` seeded random bytes (incompressible: the stored form is as large as the value).
    static func bytes(count: Int, seed: UInt64) -> Data {
        var random = SplitMix64(seed: seed)
        var data = Data(count: count)
        data.withUnsafeMutableBytes { raw in
            var offset = 0
            while offset + 8 <= count {
                raw.storeBytes(of: random.next(), toByteOffset: offset, as: UInt64.self)
                offset += 8
            }
            while offset < count {
                raw[offset] = UInt8(truncatingIfNeeded: random.next())
                offset += 1
            }
        }
        return data
    }

    /// Whether `data` holds the bytes of ``bytes(count:seed:)``, checked without a second copy.
    static func matches(_ data: Data, seed: UInt64) -> Bool {
        var random = SplitMix64(seed: seed)
        return data.withUnsafeBytes { raw in
            var offset = 0
            while offset + 8 <= raw.count {
                guard raw.loadUnaligned(fromByteOffset: offset, as: UInt64.self) == random.next() else { return false }
                offset += 8
            }
            while offset < raw.count {
                guard raw[offset] == UInt8(truncatingIfNeeded: random.next()) else { return false }
                offset += 1
            }
            return true
        }
    }

    /// The process's peak resident set (`VmHWM` of `/proc/self/status`), in bytes.
    static func peakResidentBytes() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") })
        else { return -1 }
        return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? -1) * 1024
    }
}

struct LargeValueError: Error, CustomStringConvertible {
    var message: String
    var description: String { self.message }
}
