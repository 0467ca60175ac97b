import Synchronization

/// Versions every write of a cache, and keeps a copy from a lower tier (a *fill*) from landing
/// over a newer write.
///
/// Every store and removal takes the next version under the fence's lock, and in the same critical
/// section changes memory and enqueues itself on every write-behind queue: so queue order is
/// version order, and two writers of one key cannot reach a tier in the opposite order from memory.
///
/// A lookup below memory takes a *ticket*: the version current when it started. When it finds an
/// entry it may fill the tiers above only if no write of that key, of its namespace or of
/// everything got a newer version meanwhile. While lookups are in flight the fence remembers the
/// keys written since the oldest of them started; with none in flight it remembers nothing but
/// the latest removal of each namespace and of everything.
///
/// A load (a miss's loader call, or a background refresh) takes a ``LoadTicket`` instead: it
/// watches its one key, so that a load that runs for minutes costs one dictionary entry, not a log
/// of every write made meanwhile. Its store is conditional (``write(_:ifUnchangedSince:_:)``): it
/// lands only if no write of its key, its namespace or everything is newer than the ticket. This
/// is the rule "a result is kept only if nothing newer happened to its key while it loaded".
///
/// The fence is also where the cache closes: ``close()`` flips the flag under the fence's lock, and
/// every write checks it in the same critical section in which it enqueues, so that no write is
/// accepted after the write-behind queues were told to finish.
final class VersionFence: Sendable {
    /// The version current when a lookup started.
    struct Ticket: Sendable {
        let snapshot: UInt64
    }

    /// The version current when a load of ``key`` started, and the key it watches.
    struct LoadTicket: Sendable {
        let key: CacheKey
        let snapshot: UInt64
    }

    /// A key watched by loads in flight: how many, and the version of its latest write.
    private struct Watch {
        var loads: Int
        var lastWrite: UInt64
    }

    private struct State {
        var version: UInt64 = 0
        var isClosed = false
        /// Keys with loads in flight (see ``LoadTicket``).
        var watched: [String: Watch] = [:]
        /// How many lookups in flight started at the current version: the common case, counted
        /// without hashing.
        var currentReads = 0
        /// Snapshots older than the current version of the lookups in flight, with how many
        /// share each.
        var olderReads: [UInt64: Int] = [:]
        /// Keys written while lookups were in flight, in version order.
        var log: [(version: UInt64, key: String)] = []
        var logHead = 0
        var recentKeys: [String: UInt64] = [:]
        var namespaceRemovals: [String: UInt64] = [:]
        var removeAllVersion: UInt64 = 0

        /// Whether no write of `key`, of its namespace or of everything is newer than `ticket`.
        func isUnchanged(_ key: CacheKey, since ticket: Ticket) -> Bool {
            let newest = max(
                self.recentKeys[key.rawValue] ?? 0,
                self.namespaceRemovals[key.namespace] ?? 0,
                self.removeAllVersion
            )
            return newest <= ticket.snapshot
        }

        /// Whether no write of the load's key, of its namespace or of everything is newer than
        /// the ticket.
        func isUnchanged(since ticket: LoadTicket) -> Bool {
            let newest = max(
                self.watched[ticket.key.rawValue]?.lastWrite ?? 0,
                self.namespaceRemovals[ticket.key.namespace] ?? 0,
                self.removeAllVersion
            )
            return newest <= ticket.snapshot
        }

        var hasActiveReads: Bool { self.currentReads > 0 || !self.olderReads.isEmpty }

        /// The snapshot of the oldest lookup in flight.
        var oldestRead: UInt64? {
            self.olderReads.keys.min() ?? (self.currentReads > 0 ? self.version : nil)
        }
    }

    private let state = Mutex(State())
    /// `state.isClosed`, for the paths that only read it (hits); stored under the lock.
    private let closed = Atomic<Bool>(false)

    /// Whether ``close()`` was called.
    var isClosed: Bool { self.closed.load(ordering: .relaxed) }

    /// Closes the fence: every write after this throws ``PanzaError/Code/closed``.
    /// - Returns: whether this call closed it (`false` when it was closed already).
    func close() -> Bool {
        self.state.withLock { state in
            guard !state.isClosed else { return false }
            state.isClosed = true
            self.closed.store(true, ordering: .releasing)
            return true
        }
    }

    /// Starts a load of `key`. Pair with ``endLoad(_:)`` after its store (or its failure).
    func beginLoad(_ key: CacheKey) -> LoadTicket {
        self.state.withLock { state in
            state.watched[key.rawValue, default: Watch(loads: 0, lastWrite: 0)].loads += 1
            return LoadTicket(key: key, snapshot: state.version)
        }
    }

    func endLoad(_ ticket: LoadTicket) {
        self.state.withLock { state in
            guard let watch = state.watched[ticket.key.rawValue] else { return }
            if watch.loads > 1 {
                state.watched[ticket.key.rawValue]!.loads -= 1
            } else {
                state.watched[ticket.key.rawValue] = nil
            }
        }
    }

    /// How many keys loads in flight watch, for tests of the fence's bounds.
    var watchedKeyCount: Int { self.state.withLock { $0.watched.count } }
    /// How many writes the lookup log holds, for tests of the fence's bounds.
    var logCount: Int { self.state.withLock { $0.log.count - $0.logHead } }

    /// Starts a lookup below memory. Pair with ``endRead(_:)``.
    func beginRead() -> Ticket {
        self.state.withLock { state in
            state.currentReads += 1
            return Ticket(snapshot: state.version)
        }
    }

    func endRead(_ ticket: Ticket) {
        self.state.withLock { state in
            if ticket.snapshot == state.version {
                state.currentReads -= 1
            } else if let count = state.olderReads[ticket.snapshot], count > 1 {
                state.olderReads[ticket.snapshot] = count - 1
            } else {
                state.olderReads[ticket.snapshot] = nil
            }
            guard let oldest = state.oldestRead else {
                if !state.log.isEmpty {
                    state.log = []
                    state.logHead = 0
                    state.recentKeys = [:]
                }
                return
            }
            while state.logHead < state.log.count, state.log[state.logHead].version <= oldest {
                let entry = state.log[state.logHead]
                if state.recentKeys[entry.key] == entry.version { state.recentKeys[entry.key] = nil }
                state.logHead += 1
            }
            if state.logHead > 1024, state.logHead * 2 > state.log.count {
                state.log.removeFirst(state.logHead)
                state.logHead = 0
            }
        }
    }

    /// Gives `operation` the next version and runs `body` with it under the fence's lock.
    ///
    /// `body` must not block: it changes memory and enqueues on the write-behind queues.
    ///
    /// - Parameter ticket: for a conditional write (a load's store): the write happens only if no
    ///   write concerning its key is newer than the ticket; else `body` does not run and `nil` is
    ///   returned.
    /// - Throws: ``PanzaError/Code/closed`` once ``close()`` was called.
    func write<Result>(
        _ operation: CacheTierOperation,
        ifUnchangedSince ticket: LoadTicket? = nil,
        _ body: (UInt64) -> Result
    ) throws(PanzaError) -> Result? {
        try self.state.withLock { (state) throws(PanzaError) -> Result? in
            guard !state.isClosed else { throw PanzaError(code: .closed, message: "the cache is closed") }
            if let ticket, !state.isUnchanged(since: ticket) { return nil }
            if state.currentReads > 0 {
                state.olderReads[state.version] = state.currentReads
                state.currentReads = 0
            }
            state.version += 1
            let version = state.version
            switch operation {
            case .store(let key, _, _), .remove(let key):
                if state.hasActiveReads {
                    state.log.append((version, key.rawValue))
                    state.recentKeys[key.rawValue] = version
                }
                if !state.watched.isEmpty, state.watched[key.rawValue] != nil {
                    state.watched[key.rawValue]!.lastWrite = version
                }
            case .removeNamespace(let namespace):
                state.namespaceRemovals[namespace] = version
            case .removeAll:
                state.removeAllVersion = version
                state.namespaceRemovals = [:]
            }
            return body(version)
        }
    }

    /// Runs `body` under the fence's lock if no write concerning `key` is newer than `ticket`.
    /// Returns whether it ran.
    @discardableResult
    func fill(_ key: CacheKey, ticket: Ticket, _ body: () -> Void) -> Bool {
        self.state.withLock { state in
            guard !state.isClosed, state.isUnchanged(key, since: ticket) else { return false }
            body()
            return true
        }
    }
}
