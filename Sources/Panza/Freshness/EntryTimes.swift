/// When an entry was made, until when it is fresh, and until when the tiers keep it.
@usableFromInline
struct EntryTimes: Sendable, Hashable {
    /// When the value was made, in milliseconds since 1970.
    @usableFromInline var createdAtMilliseconds: Int64
    /// The end of the fresh period (the time to live); `Int64.max` for never.
    @usableFromInline var freshUntilMilliseconds: Int64
    /// The end of the stale period, when every tier may drop the entry; `Int64.max` for never.
    @usableFromInline var retainedUntilMilliseconds: Int64

    /// Times of a value made at `createdAtMilliseconds` to live `timeToLiveMilliseconds` (0 for
    /// ever), then to be kept `staleForMilliseconds` more.
    @usableFromInline
    init(createdAtMilliseconds: Int64, timeToLiveMilliseconds: Int64, staleForMilliseconds: Int64) {
        self.createdAtMilliseconds = createdAtMilliseconds
        if timeToLiveMilliseconds > 0 {
            let fresh = createdAtMilliseconds.addingReportingOverflow(timeToLiveMilliseconds)
            self.freshUntilMilliseconds = fresh.overflow ? .max : fresh.partialValue
            let retained = self.freshUntilMilliseconds.addingReportingOverflow(max(0, staleForMilliseconds))
            self.retainedUntilMilliseconds = retained.overflow ? .max : retained.partialValue
        } else {
            self.freshUntilMilliseconds = .max
            self.retainedUntilMilliseconds = .max
        }
    }

    /// Where the entry stands at a time.
    @usableFromInline
    enum State {
        case fresh
        /// Expired this many milliseconds ago, but still kept.
        case stale(expiredForMilliseconds: Int64)
        case gone
    }

    @inlinable
    func state(atMilliseconds now: Int64) -> State {
        if now < self.freshUntilMilliseconds { return .fresh }
        if now < self.retainedUntilMilliseconds {
            return .stale(expiredForMilliseconds: now - self.freshUntilMilliseconds)
        }
        return .gone
    }

    /// When the entry stops being fresh; `nil` for never.
    var freshUntil: Int64? { self.freshUntilMilliseconds == .max ? nil : self.freshUntilMilliseconds }

    /// When tiers may drop the entry, as the tiers' `expiresAtMilliseconds`; `nil` for never.
    var retainedUntil: Int64? { self.retainedUntilMilliseconds == .max ? nil : self.retainedUntilMilliseconds }

    /// Whether a hit at `now` falls after `ratio` of the fresh period (refresh-ahead).
    @inlinable
    func isRefreshDue(atMilliseconds now: Int64, ratio: Double) -> Bool {
        guard self.freshUntilMilliseconds != .max else { return false }
        let period = Double(self.freshUntilMilliseconds - self.createdAtMilliseconds)
        return Double(now - self.createdAtMilliseconds) >= period * ratio
    }
}
