/// A tier below memory, and how the cache writes it.
struct TierSlot: Sendable {
    let tier: any CacheTier
    /// The tier's position in the chain (and in statistics).
    let index: Int
    /// The in-memory write-behind queue of the tier, unless it is written through an outbox or not at all.
    let lane: WriteBehindLane?
    /// The SQLite tier whose outbox holds this (remote) tier's pending writes.
    let outbox: SQLiteTier?

    /// What pending writes say about `key` before the tier is asked.
    func shadow(forKey key: CacheKey) async throws -> WriteBehindLane.Shadow {
        if let lane { return lane.shadow(forKey: key.rawValue) }
        if let outbox { return try await outbox.outboxShadow(forKey: key) }
        return .none
    }
}
