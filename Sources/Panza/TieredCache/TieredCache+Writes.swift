import Foundation
import Logging
import Synchronization

/// The conditions a load's store lands on: "a result is kept only if nothing newer happened to its
/// key while it loaded". Taken when the load is decided (a miss's flight, or a refresh when its
/// stale hit is served), before anything that may wait.
struct StoreCondition: Sendable {
    /// The fence's ticket: a write of the key, its namespace or everything since then in this
    /// process wins over the load.
    let ticket: VersionFence.LoadTicket
    /// When the load started: the loaded value's creation time, so that a removal made after it
    /// started (here, in another process or on another machine) removes the loaded value too.
    let createdAtMilliseconds: Int64
    /// The key's SQLite write stamp read before the load (by the lookup that missed, or by a
    /// refresh's lease): a removal by another process of the file since then wins over the load
    /// (see ``SQLiteWrite/refreshStamp``). `nil` when none was read: the fence alone decides.
    var sqliteStamp: Int64?
}

/// Every store and removal of the cache goes through here: versioned by the fence, applied to
/// memory and queued for every tier below in one critical section, in which "closed" is checked.
extension TieredCache {
    /// Versions `operation`, applies it to memory and queues it for every tier below, in one
    /// step under the fence: so every queue sees writes in version order, and no write is
    /// accepted once ``close()`` closed the fence.
    ///
    /// Waits for room in the queues first (cancellable); room is advisory, so concurrent writers
    /// may overshoot the bounds by one operation each. A write that is not a load's store
    /// detaches the flights it concerns (``SingleFlight/detach(_:)``).
    ///
    /// - Parameter condition: for a load's store, the conditions it lands on: nothing happens (and
    ///   `nil` is returned) when a write of the key is newer than its ticket.
    /// - Returns: the operation's sequence in each lane, for waiting until applied.
    /// - Throws: ``PanzaError/Code/closed``; `CancellationError` while waiting for room.
    func submit(
        _ operation: CacheTierOperation,
        pending: PendingEnvelope? = nil,
        condition: StoreCondition? = nil,
        inMemory: (MemoryTier) -> Void
    ) async throws -> [(Lane, UInt64)]? {
        for lane in self.lanes { try await lane.queue.waitForRoom() }
        let sequences = try self.fence.write(operation, ifUnchangedSince: condition?.ticket) { version in
            // Detached in the critical section: no caller can join the old flight once memory
            // shows the write.
            if condition == nil { self.singleFlight.detach(operation) }
            if let memory = self.memory { inMemory(memory) }
            return self.lanes.compactMap { lane in
                lane.queue.enqueue(
                    operation, version: version, replicate: lane.replicates, pending: pending,
                    refreshStamp: condition?.sqliteStamp
                ).map { (lane, $0) }
            }
        }
        for lane in self.lanes { lane.drainer.notify() }
        return sequences
    }

    /// Encodes `value`, puts it in memory and queues it for every tier below.
    ///
    /// - Parameters:
    ///   - replacing: a `set`: with a time to live of zero or less, the key's previous value is
    ///     removed (it was replaced). A loader's result is simply not stored.
    ///   - freshness: the policy whose stale period the entry is kept for; `nil` for
    ///     ``Configuration/defaultFreshness``.
    ///   - condition: for a load's store: when its value was made, and the conditions it lands on.
    /// - Returns: the envelope's size, 0 when nothing was stored.
    @discardableResult
    func store<Value: Encodable & Sendable>(
        _ value: Value,
        key: CacheKey,
        timeToLive: Duration?,
        replacing: Bool,
        freshness: Freshness? = nil,
        condition: StoreCondition? = nil
    ) async throws -> Int {
        try self.checkOpen()
        let lifetime = Lifetime(timeToLive ?? self.configuration.defaultTimeToLive)
        guard case .milliseconds(let timeToLiveMilliseconds) = lifetime else {
            if replacing {
                _ = try await self.submit(.remove(key)) { $0.remove(key.rawValue) }
            }
            return 0
        }
        let (payloadCount, times, form): (Int, EntryTimes, ValueCoding.StoredForm)
        do {
            // A value that SQLite will keep in chunks goes down as it is and is encoded there,
            // frame by frame: the queue never holds a second copy of it.
            (payloadCount, times, form) = try ValueCoding.storedForm(
                of: value,
                createdAtMilliseconds: condition?.createdAtMilliseconds ?? self.clock.nowMilliseconds(),
                timeToLiveMilliseconds: timeToLiveMilliseconds,
                staleForMilliseconds: (freshness ?? self.configuration.defaultFreshness)?.retentionMilliseconds ?? 0,
                compress: self.configuration.compression,
                maxPayloadBytes: self.configuration.maxValueBytes,
                pendingAbove: self.configuration.sqlite == nil ? nil : BlobChunks.chunkSize)
        } catch let error as PanzaError where error.code == .valueTooLarge {
            throw PanzaError(
                code: error.code, message: error.message + ", the safety limit of the cache's configuration",
                key: key.rawValue)
        }
        let expiresAt = times.retainedUntil
        let blob: [UInt8]
        let pending: PendingEnvelope?
        switch form {
        case .blob(let bytes): (blob, pending) = (bytes, nil)
        case .pending(let value): (blob, pending) = ([], value)
        }
        let operation = CacheTierOperation.store(key: key, blob: blob, expiresAtMilliseconds: expiresAt)
        let submitted = try await self.submit(operation, pending: pending, condition: condition) { memory in
            self.putInMemory(
                memory, value, key: key, cost: Self.memoryCost(payload: payloadCount, key: key),
                storedBytes: pending == nil ? blob.count : payloadCount, times: times)
        }
        guard let sequences = submitted else {
            self.recorder.add(.discardedLoads)
            return 0
        }
        self.recorder.add(.writes)
        if self.configuration.writeMode == .writeThrough {
            try await self.waitUntilEveryTierHolds(sequences)
        }
        return pending == nil ? blob.count : payloadCount
    }

    /// Waits until the operations of `sequences` reached their tiers and, when a remote tier is
    /// written through the SQLite outbox, until the outbox uploaded them (write-through).
    func waitUntilEveryTierHolds(_ sequences: [(Lane, UInt64)]) async throws {
        for (lane, sequence) in sequences {
            try await lane.drainer.waitUntilApplied(sequence)
        }
        if sequences.contains(where: \.0.replicates) { try await self.waitForOutboxUploads() }
    }

    /// Returns once everything in the SQLite outbox now has been uploaded to the remote tier
    /// (at once without an outbox).
    func waitForOutboxUploads() async throws {
        guard let outbox = self.outbox else { return }
        let target = try await outbox.queue.lastSequence()
        outbox.drainer.notify()
        try await outbox.drainer.waitUntilApplied(target)
    }

    /// Removes from memory at once, then from every tier below; returns when they applied it.
    func remove(_ operation: CacheTierOperation) async throws {
        try self.checkOpen()
        let sequences = try await self.submit(operation) { memory in
            switch operation {
            case .remove(let key): memory.remove(key.rawValue)
            case .removeNamespace(let namespace): memory.removeNamespace(namespace)
            case .removeAll: memory.removeAll()
            case .store: preconditionFailure("remove(_:) takes removals only")
            }
        }
        for (lane, sequence) in sequences ?? [] {
            try await lane.drainer.waitUntilApplied(sequence)
        }
    }

    /// What an entry costs the memory tier: its decoded payload (compression saves nothing once
    /// the value is decoded) and its key.
    static func memoryCost(payload: Int, key: CacheKey) -> Int {
        payload + key.rawValue.utf8.count
    }

    /// Puts a decoded value in the memory tier and counts what it evicted.
    ///
    /// - Parameter isFill: a copy from a lower tier: it does not replace a newer entry.
    func putInMemory(
        _ memory: MemoryTier,
        _ value: any Sendable,
        key: CacheKey,
        cost: Int,
        storedBytes: Int,
        times: EntryTimes,
        isFill: Bool = false
    ) {
        let evicted = memory.insert(
            .make(value: value, cost: cost, storedBytes: storedBytes, namespace: key.namespace, times: times),
            forKey: key.rawValue,
            keepingNewer: isFill
        )
        if evicted > 0 { self.recorder.add(.memoryEvictions, evicted) }
    }

    /// Applies a batch to a tier, telling a shared one when each operation was made.
    static func apply(_ batch: [QueuedWrite], to tier: any CacheTier) async throws {
        if let sharing = tier as? any InvalidationSharing {
            try await sharing.apply(batch.map(\.materialized), madeAtMilliseconds: batch.map(\.madeAtMilliseconds))
        } else {
            try await tier.apply(batch.map(\.materialized))
        }
    }

    /// Applies invalidations from other caches to memory, the local lanes and the flights: each
    /// is versioned like a removal of this cache's own (so that no fill or load in flight lands
    /// after it), is not replicated (the shared tier already has it), and removes only values made
    /// before it, in memory and in SQLite.
    static func applyInvalidations(
        _ invalidations: [CacheInvalidation], memory: MemoryTier?, lanes: [Lane], fence: VersionFence,
        flights: SingleFlight
    ) {
        for invalidation in invalidations {
            let operation: CacheTierOperation =
                switch invalidation.scope {
                case .key(let key): .remove(key)
                case .namespace(let namespace): .removeNamespace(namespace)
                case .all: .removeAll
                }
            let cutoff = invalidation.createdBeforeMilliseconds
            let applied: Void? = try? fence.write(operation) { version in
                flights.detach(operation)
                switch invalidation.scope {
                case .key(let key): memory?.remove(key.rawValue, createdBefore: cutoff)
                case .namespace(let namespace): memory?.removeNamespace(namespace, createdBefore: cutoff)
                case .all: memory?.removeAll(createdBefore: cutoff)
                }
                for lane in lanes {
                    lane.queue.enqueue(operation, version: version, replicate: false, createdBefore: cutoff)
                }
            }
            guard applied != nil else { return }  // closed
        }
        for lane in lanes { lane.drainer.notify() }
    }
}
