import Synchronization

/// At most `limit` operations at once, in total or per key (Python panza's
/// `limit_concurrency(n, derive_key)`).
///
/// ```swift
/// let pool = ConcurrencyLimiter(limit: 4)
/// let r = try await pool.withPermit(key: "tenant-7") { try await work() }   // key optional
/// ```
///
/// Waiters get permits in arrival order. A waiter that is cancelled leaves at once with
/// `CancellationError`. Only keys in use take memory: a key's record is dropped when its last
/// operation ends, so memory does not grow with the number of distinct keys seen.
public final class ConcurrencyLimiter: Sendable {
    private struct Slot {
        var active = 0
        var waiters: [(id: UInt64, slot: WaiterSlot)] = []
    }

    private struct State {
        var slots: [String?: Slot] = [:]
        var nextID: UInt64 = 0
        var throttled = 0
    }

    /// The most operations at once, per key (or in total without a key).
    public let limit: Int
    private let state = Mutex(State())

    /// - Precondition: `limit >= 1`.
    public init(limit: Int) {
        precondition(limit >= 1, "limit must be at least 1")
        self.limit = limit
    }

    /// Runs `operation` once fewer than ``limit`` operations of `key` (or of all, for `nil`) run.
    ///
    /// - Throws: `CancellationError` when cancelled while waiting; whatever `operation` throws.
    public func withPermit<Result>(
        key: String? = nil,
        _ operation: () async throws -> Result
    ) async throws -> Result {
        _ = try await self.acquire(key: key)
        defer { self.release(key: key) }
        return try await operation()
    }

    /// Keys with operations running or waiting (the memory the limiter holds).
    public var keysInUse: Int { self.state.withLock { $0.slots.count } }

    /// Operations that had to wait for a permit so far.
    public var throttledCount: Int { self.state.withLock { $0.throttled } }

    /// Takes a permit. Returns whether it had to wait.
    func acquire(key: String?) async throws -> Bool {
        try Task.checkCancellation()
        let waiter: (id: UInt64, slot: WaiterSlot)? = self.state.withLock { state in
            var slot = state.slots[key, default: Slot()]
            defer { state.slots[key] = slot }
            if slot.active < self.limit && slot.waiters.isEmpty {
                slot.active += 1
                return nil
            }
            state.nextID &+= 1
            state.throttled += 1
            let waiter = (id: state.nextID, slot: WaiterSlot())
            slot.waiters.append(waiter)
            return waiter
        }
        guard let waiter else { return false }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                waiter.slot.park(continuation)
            }
        } onCancel: {
            if waiter.slot.cancel() {
                self.state.withLock { state in
                    state.slots[key]?.waiters.removeAll { $0.id == waiter.id }
                    Self.dropIfIdle(&state, key: key)
                }
            }
        }
        return true
    }

    /// Returns a permit, handing it straight to the first waiter if there is one.
    func release(key: String?) {
        while true {
            let next: WaiterSlot? = self.state.withLock { state in
                guard var slot = state.slots[key] else { return nil }
                defer {
                    state.slots[key] = slot
                    Self.dropIfIdle(&state, key: key)
                }
                if slot.waiters.isEmpty {
                    slot.active -= 1
                    return nil
                }
                return slot.waiters.removeFirst().slot  // the permit passes on; `active` stays
            }
            guard let next else { return }
            if next.grant() { return }
            // That waiter was cancelled meanwhile: give the permit to the next one, or back.
        }
    }

    private static func dropIfIdle(_ state: inout State, key: String?) {
        if let slot = state.slots[key], slot.active == 0, slot.waiters.isEmpty {
            state.slots[key] = nil
        }
    }
}
