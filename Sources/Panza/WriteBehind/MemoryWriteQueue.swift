import Synchronization

/// The in-memory write-behind queue of one tier: SQLite, or a remote tier without SQLite above it.
///
/// Operations are queued by ``TieredCache`` in version order (it enqueues under its version lock)
/// and applied in that order by a ``QueueDrainer``. Until an operation is applied its effect shows
/// in ``shadow(forKey:)``: a queued store is read from here, and a queued removal of a key, of its
/// namespace or of everything hides whatever the tier still holds. A removal that ends in the dead
/// letters keeps hiding the key for the life of the process, since the tier may still hold the
/// old value.
///
/// A removal learned from another cache (an invalidation with a creation cutoff) hides only the
/// values made before its cutoff: ``shadow(forKey:)`` answers ``WriteShadow/removedBefore(_:)``,
/// and the reader judges the tier's copy by its creation time.
///
/// The queue is bounded by operations and by bytes; ``waitForRoom()`` is where writers wait.
final class MemoryWriteQueue: WriteQueue {
    /// A queued removal of a namespace or of everything: its version, and the creation cutoff of
    /// the values it removes (`nil`: all of them). Two removals of one scope merge into the wider.
    private struct ScopeRemoval {
        var version: UInt64
        var createdBefore: Int64?

        func merged(with newer: ScopeRemoval) -> ScopeRemoval {
            ScopeRemoval(version: newer.version, createdBefore: Self.wider(self.createdBefore, newer.createdBefore))
        }

        /// The wider of two cutoffs: `nil` (everything) wins, else the later time.
        static func wider(_ a: Int64?, _ b: Int64?) -> Int64? {
            guard let a, let b else { return nil }
            return max(a, b)
        }
    }

    private struct Pending {
        var write: QueuedWrite
        var version: UInt64
        var namespace: String?
    }

    private struct KeyShadow {
        var version: UInt64
        var namespace: String
        var blob: [UInt8]?
        var pending: PendingEnvelope?
        /// For a removal: the creation cutoff of the values it removes; `nil` for all.
        var createdBefore: Int64? = nil
    }

    private struct State {
        var pending: [Pending] = []
        var head = 0
        var pendingBytes = 0
        var lastSequence: UInt64 = 0
        var watermark: UInt64 = 0
        var keys: [String: KeyShadow] = [:]
        var namespaceRemovals: [String: ScopeRemoval] = [:]
        var removeAll: ScopeRemoval?
        /// Removals that went to the dead letters: they hide their keys for good.
        var poisonedKeys: [String: UInt64] = [:]
        var poisonedNamespaces: [String: UInt64] = [:]
        var poisonedAll: UInt64?
        /// Keys written to the tier after a removal was poisoned: their stored value is valid.
        var writtenAfterPoison: [String: UInt64] = [:]
        var hasPoison: Bool {
            !self.poisonedKeys.isEmpty || !self.poisonedNamespaces.isEmpty || self.poisonedAll != nil
        }
        var roomWaiters: [UInt64: CheckedContinuation<Void, any Error>] = [:]
        var nextWaiterID: UInt64 = 0
        var isClosed = false

        var count: Int { self.pending.count - self.head }

        /// Whether no read sees anything here: nothing queued, nothing poisoned.
        var shadowsNothing: Bool {
            self.keys.isEmpty && self.namespaceRemovals.isEmpty && self.removeAll == nil && !self.hasPoison
        }
    }

    let tierName: String
    let maxPending: Int
    let maxPendingBytes: Int
    private let applier: @Sendable ([QueuedWrite]) async throws -> Void
    private let permanent: @Sendable (any Error) -> Bool
    private let state = Mutex(State())
    /// `state.shadowsNothing`, stored under the lock whenever it may change: the common read (an
    /// idle queue) loads it and takes no lock, so that reads on several cores do not pass the
    /// lock's cache line between them. A read that loads `true` while a write is being queued is
    /// ordered before that write, as if it had taken the lock first.
    private let shadowsNothing = Atomic<Bool>(true)

    /// - Parameters:
    ///   - applier: writes a batch to the tier (for SQLite, with its outbox records).
    ///   - isPermanent: the tier's classification of its errors.
    init(
        tierName: String,
        maxPending: Int,
        maxPendingBytes: Int,
        isPermanent: @escaping @Sendable (any Error) -> Bool,
        applier: @escaping @Sendable ([QueuedWrite]) async throws -> Void
    ) {
        self.tierName = tierName
        self.maxPending = maxPending
        self.maxPendingBytes = maxPendingBytes
        self.permanent = isPermanent
        self.applier = applier
    }

    var pendingCount: Int { self.state.withLock { $0.count } }
    var pendingBytes: Int { self.state.withLock { $0.pendingBytes } }

    // MARK: Writers

    /// Returns once the queue has room for one more operation.
    ///
    /// Room is advisory: writers that were let in together may overshoot the bounds by one
    /// operation each. A closed queue always has room (the caller then fails on its own check).
    ///
    /// - Throws: `CancellationError` when the task is cancelled while waiting.
    func waitForRoom() async throws {
        if self.state.withLock({ self.hasRoom($0) }) { return }
        let id = self.state.withLock { state in
            state.nextWaiterID &+= 1
            return state.nextWaiterID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                enum Registration { case ready, cancelled, waiting }
                let registration: Registration = self.state.withLock { state in
                    if self.hasRoom(state) { return .ready }
                    if Task.isCancelled { return .cancelled }
                    state.roomWaiters[id] = continuation
                    return .waiting
                }
                switch registration {
                case .ready: continuation.resume()
                case .cancelled: continuation.resume(throwing: CancellationError())
                case .waiting: break
                }
            }
        } onCancel: {
            let waiter = self.state.withLock { $0.roomWaiters.removeValue(forKey: id) }
            waiter?.resume(throwing: CancellationError())
        }
    }

    private func hasRoom(_ state: State) -> Bool {
        state.isClosed || (state.count < self.maxPending && state.pendingBytes < self.maxPendingBytes)
    }

    /// Queues `operation` at `version`. Never waits: call ``waitForRoom()`` first.
    ///
    /// - Parameters:
    ///   - isFill: a copy of an entry from a lower tier, or a repair; dropped (returns `nil`) when
    ///     the queue is full, since nothing is lost.
    ///   - fillStamp: for a fill into SQLite, the stamp its lookup read.
    ///   - isRepair: for a removal, the deletion of a copy a lookup found unusable (see
    ///     ``SQLiteWrite/isRepair``).
    /// - Returns: the operation's sequence, for ``QueueDrainer/waitUntilApplied(_:)``.
    @discardableResult
    func enqueue(
        _ operation: CacheTierOperation,
        version: UInt64,
        replicate: Bool,
        isFill: Bool = false,
        fillStamp: Int64? = nil,
        pending: PendingEnvelope? = nil,
        createdBefore: Int64? = nil,
        refreshStamp: Int64? = nil,
        isRepair: Bool = false
    ) -> UInt64? {
        self.state.withLock { state in
            if isFill, !self.hasRoom(state) { return nil }
            state.lastSequence += 1
            let write = QueuedWrite(
                sequence: state.lastSequence,
                operation: operation,
                replicate: replicate,
                attempts: 0,
                fillStamp: fillStamp,
                pending: pending,
                createdBefore: createdBefore,
                madeAtMilliseconds: WallClock.nowMilliseconds(),
                refreshStamp: refreshStamp,
                isRepair: isRepair
            )
            var namespace: String?
            switch operation {
            case .store(let key, let blob, _):
                state.keys[key.rawValue] = KeyShadow(
                    version: version, namespace: key.namespace, blob: blob, pending: pending)
            case .remove(let key):
                if let createdBefore, let held = state.keys[key.rawValue], Self.survives(held, cutoff: createdBefore) {
                    // A removal learned from another cache does not hide this process's own
                    // queued removal (it stays whole) or a store made after its cutoff.
                    break
                }
                state.keys[key.rawValue] = KeyShadow(
                    version: version, namespace: key.namespace, blob: nil, createdBefore: createdBefore)
            case .removeNamespace(let removed):
                let removal = ScopeRemoval(version: version, createdBefore: createdBefore)
                state.namespaceRemovals[removed] = state.namespaceRemovals[removed]?.merged(with: removal) ?? removal
                namespace = removed
            case .removeAll:
                let removal = ScopeRemoval(version: version, createdBefore: createdBefore)
                state.removeAll = state.removeAll?.merged(with: removal) ?? removal
            }
            state.pending.append(Pending(write: write, version: version, namespace: namespace))
            state.pendingBytes += write.byteCount
            self.shadowsNothing.store(false, ordering: .releasing)
            return write.sequence
        }
    }

    /// Whether a queued key entry stands over a later removal with a creation cutoff: a whole
    /// removal does, and so does a store of a value made at or after the cutoff.
    private static func survives(_ entry: KeyShadow, cutoff: Int64) -> Bool {
        if let pending = entry.pending { return pending.createdAtMilliseconds >= cutoff }
        if let blob = entry.blob {
            return (BlobEnvelope.createdAtMilliseconds(ofStored: blob) ?? .min) >= cutoff
        }
        return entry.createdBefore == nil
    }

    /// Lets every writer waiting for room go (they then find the cache closed).
    func close() {
        let waiters = self.state.withLock { state in
            state.isClosed = true
            defer { state.roomWaiters = [:] }
            return Array(state.roomWaiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    // MARK: Readers

    func shadow(forKey key: CacheKey) -> WriteShadow {
        // The common case of a read: nothing queued, nothing poisoned; no lock, no key hashed.
        if self.shadowsNothing.load(ordering: .acquiring) { return .none }
        return self.state.withLock { state in
            if state.shadowsNothing { return .none }
            let entry = state.keys[key.rawValue]
            // The removals of the key's namespace and of everything that are still queued (or
            // poisoned), merged: the newest version, and the widest cutoff.
            var scope: ScopeRemoval?
            for removal in [state.namespaceRemovals[key.namespace], state.removeAll] {
                guard let removal else { continue }
                scope =
                    scope.map { removal.version > $0.version ? $0.merged(with: removal) : removal.merged(with: $0) }
                    ?? removal
            }
            if state.hasPoison {
                let poison = max(
                    state.poisonedNamespaces[key.namespace] ?? 0,
                    state.poisonedAll ?? 0,
                    state.poisonedKeys[key.rawValue] ?? 0
                )
                if poison > state.writtenAfterPoison[key.rawValue] ?? 0 {
                    scope = ScopeRemoval(version: max(poison, scope?.version ?? 0), createdBefore: nil)
                }
            }
            if let entry, entry.version >= scope?.version ?? 0 {
                if let pending = entry.pending { return .pending(pending) }
                if let blob = entry.blob { return .stored(blob) }
                // A removal of the key, together with any older removal of its scope still queued.
                let cutoff =
                    scope.map { ScopeRemoval.wider($0.createdBefore, entry.createdBefore) } ?? entry.createdBefore
                return cutoff.map { .removedBefore($0) } ?? .removed
            }
            guard let scope else { return .none }
            return scope.createdBefore.map { .removedBefore($0) } ?? .removed
        }
    }

    // MARK: WriteQueue

    func claim(limit: Int) -> [QueuedWrite] {
        self.state.withLock { state in
            let end = min(state.pending.count, state.head + limit)
            return state.pending[state.head..<end].map(\.write)
        }
    }

    func apply(_ batch: [QueuedWrite]) async throws {
        try await self.applier(batch)
    }

    func complete(_ batch: [QueuedWrite]) -> UInt64 {
        let (watermark, room) = self.state.withLock { state in
            for _ in batch { self.removeHead(&state, poisoned: false) }
            return (state.watermark, self.takeRoomWaiters(&state))
        }
        for waiter in room { waiter.resume() }
        return watermark
    }

    func recordFailure(_ batch: [QueuedWrite]) {
        self.state.withLock { state in
            for index in state.head..<min(state.pending.count, state.head + batch.count) {
                state.pending[index].write.attempts += 1
            }
        }
    }

    func deadLetter(_ write: QueuedWrite, error: any Error) -> UInt64 {
        let (watermark, room) = self.state.withLock { state in
            self.removeHead(&state, poisoned: true)
            return (state.watermark, self.takeRoomWaiters(&state))
        }
        for waiter in room { waiter.resume() }
        return watermark
    }

    func watermark() -> UInt64 { self.state.withLock { $0.watermark } }

    func lastSequence() -> UInt64 { self.state.withLock { $0.lastSequence } }

    func isPermanent(_ error: any Error) -> Bool { self.permanent(error) }

    // MARK: Internals

    private func removeHead(_ state: inout State, poisoned: Bool) {
        defer { if state.shadowsNothing { self.shadowsNothing.store(true, ordering: .releasing) } }
        guard state.count > 0 else { return }
        let item = state.pending[state.head]
        state.head += 1
        state.pendingBytes -= item.write.byteCount
        state.watermark = item.write.sequence
        switch item.write.operation {
        case .store(let key, _, _), .remove(let key):
            if let entry = state.keys[key.rawValue], entry.version == item.version {
                state.keys[key.rawValue] = nil
            }
            if poisoned, case .remove = item.write.operation {
                state.poisonedKeys[key.rawValue] = item.version
            } else if !poisoned, state.hasPoison {
                // A newer write of the key reached the tier: what it holds for the key is valid.
                if let poison = state.poisonedKeys[key.rawValue], poison <= item.version {
                    state.poisonedKeys[key.rawValue] = nil
                }
                if state.poisonedAll != nil || state.poisonedNamespaces[key.namespace] != nil {
                    state.writtenAfterPoison[key.rawValue] = item.version
                }
            }
        case .removeNamespace(let namespace):
            if state.namespaceRemovals[namespace]?.version == item.version { state.namespaceRemovals[namespace] = nil }
            if poisoned {
                state.poisonedNamespaces[namespace] = item.version
            } else if let poison = state.poisonedNamespaces[namespace], poison <= item.version {
                state.poisonedNamespaces[namespace] = nil  // a later removal of the namespace succeeded
            }
        case .removeAll:
            if state.removeAll?.version == item.version { state.removeAll = nil }
            if poisoned {
                state.poisonedAll = item.version
            } else if state.hasPoison {
                // A later removal of everything succeeded: nothing older is left to hide.
                state.poisonedKeys = state.poisonedKeys.filter { $0.value > item.version }
                state.poisonedNamespaces = state.poisonedNamespaces.filter { $0.value > item.version }
                if let poison = state.poisonedAll, poison <= item.version { state.poisonedAll = nil }
                if !state.hasPoison { state.writtenAfterPoison = [:] }
            }
        }
        if state.head > 1024, state.head * 2 > state.pending.count {
            state.pending.removeFirst(state.head)
            state.head = 0
        }
    }

    private func takeRoomWaiters(_ state: inout State) -> [CheckedContinuation<Void, any Error>] {
        guard !state.roomWaiters.isEmpty, self.hasRoom(state) else { return [] }
        defer { state.roomWaiters = [:] }
        return Array(state.roomWaiters.values)
    }
}
