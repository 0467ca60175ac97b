import Synchronization

/// What readers learned that the writer must record: access times for LRU, and expired keys.
///
/// Readers never write: they note here, and the writer applies the notes in its next transaction
/// (or in a maintenance transaction it schedules when the first note arrives).
final class AccessLog: Sendable {
    private struct State {
        var touches: [String: Int64] = [:]
        var expired: Set<String> = []
        var maintenanceRequested = false
    }

    private let state = Mutex(State())

    /// Records a read of `key` at `time`. Returns `true` when the writer should be asked for maintenance.
    func recordAccess(_ key: String, at time: Int64) -> Bool {
        self.state.withLock { state in
            state.touches[key] = time
            return Self.requestMaintenance(&state)
        }
    }

    /// Records that `key` was found expired. Returns `true` when the writer should be asked for maintenance.
    func recordExpired(_ key: String) -> Bool {
        self.state.withLock { state in
            state.expired.insert(key)
            return Self.requestMaintenance(&state)
        }
    }

    /// Forgets what is known of `key` (it was overwritten or removed).
    func forget(_ key: String) {
        self.state.withLock { state in
            state.touches[key] = nil
            state.expired.remove(key)
        }
    }

    func forgetAll() {
        self.state.withLock { $0 = State(maintenanceRequested: $0.maintenanceRequested) }
    }

    /// Takes every note, leaving the log empty.
    func drain() -> (touches: [String: Int64], expired: Set<String>) {
        self.state.withLock { state in
            defer {
                state.touches = [:]
                state.expired = []
                state.maintenanceRequested = false
            }
            return (state.touches, state.expired)
        }
    }

    /// Puts notes back after a failed write, keeping newer ones.
    func restore(touches: [String: Int64], expired: Set<String>) {
        self.state.withLock { state in
            state.touches.merge(touches) { newer, _ in newer }
            state.expired.formUnion(expired)
        }
    }

    var isEmpty: Bool { self.state.withLock { $0.touches.isEmpty && $0.expired.isEmpty } }

    private static func requestMaintenance(_ state: inout State) -> Bool {
        guard !state.maintenanceRequested else { return false }
        state.maintenanceRequested = true
        return true
    }
}
