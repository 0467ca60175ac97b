import Foundation

/// Wall-clock time in milliseconds since 1970, the unit of creation and expiry times in envelopes
/// and in SQLite (they must mean the same thing in every process and on every machine).
package enum WallClock {
    /// Now, in milliseconds since 1970, rounded down.
    package static func nowMilliseconds() -> Int64 {
        Int64((Date().timeIntervalSince1970 * 1000).rounded(.down))
    }
}

extension Duration {
    /// The duration in whole milliseconds, rounded down, at least 0.
    package var wholeMilliseconds: Int64 {
        let (seconds, attoseconds) = self.components
        return max(0, seconds &* 1000 &+ attoseconds / 1_000_000_000_000_000)
    }

    /// The duration in whole nanoseconds, rounded down, at least 0.
    package var wholeNanoseconds: Int64 {
        let (seconds, attoseconds) = self.components
        return max(0, seconds &* 1_000_000_000 &+ attoseconds / 1_000_000_000)
    }
}

/// How long an entry written now may be served, from a caller's time to live.
enum Lifetime: Hashable {
    /// Zero or less: "do not reuse" (as HTTP's `max-age=0`). Nothing is stored.
    case doNotStore
    /// The envelope's time to live in milliseconds; 0 means forever.
    case milliseconds(Int64)

    /// - Parameter timeToLive: `nil` for forever. Positive durations round up to whole
    ///   milliseconds, so that no positive duration becomes "forever".
    init(_ timeToLive: Duration?) {
        guard let timeToLive else {
            self = .milliseconds(0)
            return
        }
        guard timeToLive > .zero else {
            self = .doNotStore
            return
        }
        let (seconds, attoseconds) = timeToLive.components
        let wholeMilliseconds = seconds.multipliedReportingOverflow(by: 1000)
        guard !wholeMilliseconds.overflow else {
            self = .milliseconds(Int64.max / 2)
            return
        }
        let remainder = attoseconds / 1_000_000_000_000_000
        let roundsUp = attoseconds % 1_000_000_000_000_000 != 0
        self = .milliseconds(max(1, wholeMilliseconds.partialValue + remainder + (roundsUp ? 1 : 0)))
    }
}
