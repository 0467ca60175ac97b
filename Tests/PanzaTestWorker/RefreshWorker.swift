import Foundation
import Panza
import PanzaTestSupport
import Synchronization

/// A process that serves a stale entry and refreshes it in the background, driven line by line
/// from standard input; several of them share one SQLite file to show that one refresh of a key
/// runs at a time among them (the file's refresh lease).
///
/// `PanzaTestWorker refresh DB NOW_MS`: a cache on DB (no memory tier) whose clock reads NOW_MS
/// (milliseconds since 1970) and stands still; calls use a time to live of 60 s and
/// `Freshness(staleFor: 3600 s)`. Commands, each answered with one line `= ...`:
///
/// - `get KEY`: the call (its loader waits for `go`, then returns `refreshed-PID`); answers the
///   value returned.
/// - `loading`: waits until a loader has started; answers `loading`.
/// - `go`: lets loaders waiting return.
/// - `settle`: waits for background refreshes to end; answers `loads=N refreshes=N`.
/// - `quit`.
enum RefreshWorker {
    static func run(arguments: [String]) async throws {
        var configuration = TieredCache.Configuration()
        configuration.memory = nil
        configuration.sqlite = .init(path: arguments[2])
        configuration.clock = ManualCacheClock(nowMilliseconds: Int64(arguments[3])!)
        configuration.modes = CacheModes()
        let cache = try await TieredCache(configuration: configuration)
        let policy = Freshness(staleFor: .seconds(3600))
        let pid = ProcessInfo.processInfo.processIdentifier
        let released = Gate()
        let started = Gate()
        try await CommandLoop.run(cache: cache) { words in
            switch words.first ?? "" {
            case "get":
                return try await cache.value(forKey: words[1], timeToLive: .seconds(60), freshness: policy) {
                    started.open()
                    await released.wait()
                    return "refreshed-\(pid)"
                }
            case "loading":
                await started.wait()
                return "loading"
            case "go":
                released.open()
                return "ok"
            case "settle":
                await cache.waitForRefreshes()
                let statistics = cache.statistics
                return "loads=\(statistics.loads) refreshes=\(statistics.refreshes)"
            default:
                return nil
            }
        }
    }
}
