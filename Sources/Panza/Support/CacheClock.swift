import Foundation

/// The time a cache reads: wall-clock milliseconds for the creation and expiry of entries, and
/// sleeps for loader timeouts.
///
/// Caches use ``SystemCacheClock`` unless ``TieredCache/Configuration/clock`` says otherwise;
/// tests give them a ``ManualCacheClock`` and move time by hand instead of sleeping.
public protocol CacheClock: Sendable {
    /// Now, in milliseconds since 1970-01-01 UTC.
    func nowMilliseconds() -> Int64

    /// Suspends for `duration` of this clock's time.
    ///
    /// - Parameter duration: how long to sleep.
    /// - Throws: `CancellationError` when the calling task is cancelled.
    func sleep(for duration: Duration) async throws
}

/// The system's wall clock, and `Task.sleep` on the continuous clock.
public struct SystemCacheClock: CacheClock {
    /// The system clock.
    public init() {}

    /// Now, from `Date()`, in whole milliseconds since 1970.
    public func nowMilliseconds() -> Int64 { WallClock.nowMilliseconds() }

    /// `Task.sleep(for:)`.
    ///
    /// - Parameter duration: how long to sleep.
    public func sleep(for duration: Duration) async throws { try await Task.sleep(for: duration) }
}

extension CacheClock where Self == SystemCacheClock {
    /// The system's clock.
    public static var system: SystemCacheClock { SystemCacheClock() }
}
