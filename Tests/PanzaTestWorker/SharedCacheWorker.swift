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
        func answer(_ text: String) {
            FileHandle.standardOutput.write(Data("= \(text)\n".utf8))
        }
        while let line = readLine() {
            let words = line.split(separator: " ", maxSplits: 2).map(String.init)
            do {
                switch words.first ?? "" {
                case "forecast": answer(try await forecast(words[1]))
                case "bust":
                    try await forecast.bust(words[1])
                    answer("ok")
                case "bust-id":
                    try await forecast.bustAll()
                    answer("ok")
                case "bust-all":
                    try await cache.bustAll()
                    answer("ok")
                case "set":
                    try await cache.set(words[2], forKey: words[1])
                    answer("ok")
                case "get": answer(try await cache.value(forKey: words[1], as: String.self) ?? "nil")
                case "remove":
                    try await cache.removeValue(forKey: words[1])
                    answer("ok")
                case "flush":
                    try await cache.flush()
                    answer("ok")
                case "sync": answer("\(try await cache.synchronizeInvalidations())")
                case "stats":
                    let statistics = cache.statistics
                    answer(
                        "applied=\(statistics.invalidationsApplied) untrusted=\(statistics.untrustedBlobs) "
                            + "loads=\(statistics.loads) s3hits=\(statistics.tiers["s3"]?.hits ?? 0)")
                case "quit":
                    try await cache.close()
                    answer("bye")
                    return
                default: answer("error unknown command \(line)")
                }
            } catch {
                answer("error \(error)")
            }
        }
        try await cache.close()
    }
}
