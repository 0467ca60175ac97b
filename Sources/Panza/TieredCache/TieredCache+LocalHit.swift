import Logging
import Synchronization

/// The SQLite tier's inline readers and the write queue whose pending operations decide before
/// them: what ``TieredCache/localHit(_:as:refreshAhead:)`` reads.
///
/// A class that the cache holds and calls into, rather than a pair the cache copies out: copying
/// the pair retained both objects on every lookup, and lookups on several cores then passed their
/// reference counts between them.
final class LocalReads: Sendable {
    let tier: SQLiteTier
    let queue: MemoryWriteQueue

    init(tier: SQLiteTier, queue: MemoryWriteQueue) {
        self.tier = tier
        self.queue = queue
    }

    /// The entry of `key` as SQLite holds it, read and decoded on this thread; `nil` when a write
    /// of the key is queued, no inline reader answers, the entry is missing, stored in chunks or
    /// damaged (left to the full path, which counts and repairs it).
    func envelope(forKey key: CacheKey, decodingUpTo maxPayloadBytes: Int) -> DecodedEnvelope? {
        guard case .none = self.queue.shadow(forKey: key),
            let read = try? self.tier.inlineLookup(forKey: key, decodingUpTo: maxPayloadBytes),
            case .decoded(let envelope) = read
        else { return nil }
        return envelope
    }
}

extension TieredCache {
    /// A memory miss answered by the SQLite tier on the caller's thread: the common case of a new
    /// process reading what earlier ones stored. `nil` when anything needs the full read-through
    /// path, which then decides (and counts) everything: no inline reader is free, a write of the
    /// key is queued, the entry is missing, stale, expired, damaged, due for a refresh or not a
    /// `Value`, a bust mode is on, or a newly opened cache has not yet read the invalidations
    /// other caches published.
    ///
    /// What it does on a hit is what the read-through path does on a SQLite hit (the same
    /// verification, counting and fill of memory under the version fence), without the single
    /// flight, the task hops and the generic tier loop: a hit is a lookup, which concurrent
    /// callers may all make.
    ///
    /// - Parameter refreshAhead: the caller's refresh-ahead ratio; an entry due for a refresh is
    ///   left to the full path, which starts the refresh.
    @usableFromInline
    func localHit<Value: Decodable & Sendable>(_ key: CacheKey, as type: Value.Type, refreshAhead: Double?) -> Value? {
        guard self.localReads != nil, !self.fence.isClosed,
            !self.bustModeActive.load(ordering: .relaxed),
            self.invalidationFollower?.isFirstPollDone ?? true
        else { return nil }
        let lookupStart = self.trace == nil ? nil : ContinuousClock.now
        // The fence guards the fill of memory, the one tier above SQLite: without a memory tier a
        // local hit fills nothing, and takes no ticket (one lock fewer shared by every core).
        let fenced = self.memory != nil
        let ticket = fenced ? self.fence.beginRead() : VersionFence.Ticket(snapshot: 0)
        defer { if fenced { self.fence.endRead(ticket) } }
        guard
            let envelope = self.localReads?.envelope(forKey: key, decodingUpTo: self.configuration.maxValueBytes)
        else { return nil }
        let times = envelope.times
        let now = self.clock.nowMilliseconds()
        guard case .fresh = times.state(atMilliseconds: now) else { return nil }
        if let ratio = refreshAhead, times.isRefreshDue(atMilliseconds: now, ratio: ratio) { return nil }
        guard let value = try? ValueCoding.decode(type, from: envelope, key: key.rawValue) else { return nil }
        self.acceptHit(
            key, value: value, envelope: envelope, blob: nil, index: 0, ticket: ticket, missStamps: [:],
            lookupStart: lookupStart)
        return value
    }
}
