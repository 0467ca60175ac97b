/// May this copy be served to this caller? The one place where Panza decides it.
///
/// Every result passes here before it reaches a caller: a memory hit, a hit of a lower tier, and
/// what a caller receives from a flight that another caller led (whose policy may differ). A copy
/// is judged by its times and by the *receiving* caller's ``Freshness``, never by the policy of
/// whoever found it.
enum ServeDecision: Equatable {
    /// Fresh: serve it.
    case fresh
    /// Fresh, and past the caller's ``Freshness/refreshAhead``: serve it and refresh in the
    /// background.
    case freshRefreshDue
    /// Past its time to live, within the caller's ``Freshness/staleFor``: serve it and refresh in
    /// the background (stale-while-revalidate).
    case staleServable
    /// Past its time to live, beyond ``Freshness/staleFor`` but within what the caller may fall
    /// back on (``Freshness/failSafeFor`` after a failed load, or a ``Freshness/softTimeout``):
    /// load, and keep it in hand.
    case fallbackOnly
    /// Not to be served to this caller.
    case unusable

    /// Whether the copy is the caller's answer without a load.
    var servesAtOnce: Bool {
        switch self {
        case .fresh, .freshRefreshDue, .staleServable: true
        case .fallbackOnly, .unusable: false
        }
    }

    /// The decision for an entry of `times` at `now`, for a caller of `policy`.
    static func decide(_ times: EntryTimes, for policy: Freshness, atMilliseconds now: Int64) -> ServeDecision {
        switch times.state(atMilliseconds: now) {
        case .fresh:
            if let ratio = policy.refreshAhead, times.isRefreshDue(atMilliseconds: now, ratio: ratio) {
                return .freshRefreshDue
            }
            return .fresh
        case .stale(let age):
            if age < policy.staleFor.wholeMilliseconds { return .staleServable }
            if age < policy.retentionMilliseconds { return .fallbackOnly }
            return .unusable
        case .gone:
            return .unusable
        }
    }

    /// Whether a stale copy of `times` may answer a load that failed with `error` at `now`
    /// (fail-safe): within the caller's ``Freshness/failSafeFor``, and for an error it covers.
    static func mayServeAfterFailure(
        _ times: EntryTimes, for policy: Freshness, error: any Error, atMilliseconds now: Int64
    ) -> Bool {
        guard policy.allowsFailSafe(for: error), case .stale(let age) = times.state(atMilliseconds: now) else {
            return false
        }
        return age < policy.failSafeFor.wholeMilliseconds
    }
}
