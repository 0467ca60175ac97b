import Foundation

/// Wall-clock time in milliseconds since 1970, the unit of creation and expiry times in envelopes
/// and in SQLite (they must mean the same thing in every process and on every machine).
enum WallClock {
    static func nowMilliseconds() -> Int64 {
        Int64((Date().timeIntervalSince1970 * 1000).rounded(.down))
    }
}

extension Duration {
    /// The duration in whole milliseconds, rounded down, at least 0.
    var wholeMilliseconds: Int64 {
        let (seconds, attoseconds) = self.components
        return max(0, seconds &* 1000 &+ attoseconds / 1_000_000_000_000_000)
    }
}
