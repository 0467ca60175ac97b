import Foundation
import Panza
import PanzaS3

/// One machine of a team sharing a bucket, driven line by line from standard input:
///
/// - `forecast CITY`: the memoized call of id "forecast" (its loader returns `CITY#PID#N`, N its
///   calls so far); answers `= VALUE`.
/// - `bust CITY`, `bust-id`: `forecast.bust(CITY)`, `forecast.bustAll()`; `bust-all`: `cache.bustAll()`.
/// - `set KEY VALUE`, `get KEY` (`= nil` on a miss), `remove KEY`.
/// - `flush`, `sync` (read the invalidation log now; `= N` applied), `stats` (`= applied=N untrusted=N
///   loads=N`), `quit`.
enum SharedCacheWorker {
    static func run(arguments: [String]) async throws {
        var tier = testS3Tier(endpoint: arguments[3], bucket: arguments[4])
        let pollMilliseconds = Int(arguments[5])!
        tier.invalidationPollInterval = pollMilliseconds > 0 ? .milliseconds(pollMilliseconds) : nil
        if arguments.count > 6 { tier.signingKeys = try S3SigningKey.parse(arguments[6]) }
        var configuration = TieredCache.Configuration()
        configuration.memory = .init(maxEntries: 1_000, maxBytes: 1 << 20)
        configuration.sqlite = .init(path: arguments[2])
        configuration.remote = try S3Tier(configuration: tier)
        configuration.remoteReadTimeout = .seconds(10)
        configuration.modes = CacheModes()
        let cache = try await TieredCache(configuration: configuration)
        let calls = LoadCounter()
        let pid = ProcessInfo.processInfo.processIdentifier
        let forecast = cache.memoize(id: "forecast") { (city: String) async throws -> String in
            calls.increment()
            return "\(city)#\(pid)#\(calls.value)"
        }
        try await CommandLoop.run(cache: cache, maxSplits: 2) { words in
            switch words.first ?? "" {
            case "forecast": return try await forecast(words[1])
            case "bust":
                try await forecast.bust(words[1])
                return "ok"
            case "bust-id":
                try await forecast.bustAll()
                return "ok"
            case "bust-all":
                try await cache.bustAll()
                return "ok"
            case "sync": return "\(try await cache.synchronizeInvalidations())"
            case "stats":
                let statistics = cache.statistics
                return "applied=\(statistics.invalidationsApplied) untrusted=\(statistics.untrustedBlobs) "
                    + "loads=\(statistics.loads) s3hits=\(statistics.tiers["s3"]?.hits ?? 0)"
            default: return try await CommandLoop.cacheCommand(words, on: cache)
            }
        }
    }
}
