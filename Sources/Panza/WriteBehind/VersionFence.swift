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
final class VersionFence: Sendable {
    /// The version current when a lookup started.
    struct Ticket: Sendable {
        let snapshot: UInt64
    }

    private struct State {
        var version: UInt64 = 0
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

        var hasActiveReads: Bool { self.currentReads > 0 || !self.olderReads.isEmpty }

        /// The snapshot of the oldest lookup in flight.
        var oldestRead: UInt64? {
            self.olderReads.keys.min() ?? (self.currentReads > 0 ? self.version : nil)
        }
    }

    private let state = Mutex(State())

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
    /// - Parameter ticket: for a conditional write (a background refresh's store): the write
    ///   happens only if no write concerning its key is newer than the ticket; else `body` does not
    ///   run and `nil` is returned.
    func write<Result>(
        _ operation: CacheTierOperation,
        ifUnchangedSince ticket: Ticket? = nil,
        _ body: (UInt64) -> Result
    ) -> Result? {
        self.state.withLock { state in
            if let ticket, case .store(let key, _, _) = operation, !state.isUnchanged(key, since: ticket) {
                return nil
            }
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
            guard state.isUnchanged(key, since: ticket) else { return false }
            body()
            return true
        }
    }
}
