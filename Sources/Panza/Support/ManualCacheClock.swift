import Synchronization

/// A clock that moves only when told to: for tests of expiry, stale periods and timeouts that
/// never sleep.
///
/// ```swift
/// let clock = ManualCacheClock()
/// configuration.clock = clock
/// ...
/// await clock.waitForSleepers(1)   // the load is now waiting on its timeout
/// clock.advance(by: .milliseconds(200))
/// ```
public final class ManualCacheClock: CacheClock {
    private struct Sleeper {
        let deadline: Int64
        let continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var now: Int64
        var nextID: UInt64 = 0
        var sleepers: [UInt64: Sleeper] = [:]
        /// Tasks waiting in ``waitForSleepers(_:)``, with the count each waits for.
        var watchers: [(count: Int, continuation: CheckedContinuation<Void, Never>)] = []
    }

    private let state: Mutex<State>

    /// A clock that reads `nowMilliseconds` (by default, the system's time now) until advanced.
    ///
    /// - Parameter nowMilliseconds: the starting time, in milliseconds since 1970.
    public init(nowMilliseconds: Int64 = SystemCacheClock().nowMilliseconds()) {
        self.state = Mutex(State(now: nowMilliseconds))
    }

    /// The clock's current time.
    public func nowMilliseconds() -> Int64 { self.state.withLock { $0.now } }

    /// How many tasks are sleeping on the clock.
    public var sleeperCount: Int { self.state.withLock { $0.sleepers.count } }

    /// Moves the clock forward by `duration` (whole milliseconds) and wakes the sleepers it passes.
    ///
    /// - Parameter duration: how far to move; negative durations are ignored.
    public func advance(by duration: Duration) {
        let woken = self.state.withLock { state -> [CheckedContinuation<Void, any Error>] in
            state.now += duration.wholeMilliseconds
            let due = state.sleepers.filter { $0.value.deadline <= state.now }
            for id in due.keys { state.sleepers[id] = nil }
            return due.sorted { $0.value.deadline < $1.value.deadline }.map(\.value.continuation)
        }
        for continuation in woken { continuation.resume() }
    }

    /// Returns once at least `count` tasks sleep on the clock.
    ///
    /// - Parameter count: how many sleepers to wait for.
    public func waitForSleepers(_ count: Int) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = self.state.withLock { state in
                if state.sleepers.count >= count { return true }
                state.watchers.append((count, continuation))
                return false
            }
            if ready { continuation.resume() }
        }
    }

    /// Sleeps until the clock has been advanced by `duration`.
    ///
    /// - Parameter duration: how long to sleep, in this clock's time.
    /// - Throws: `CancellationError` when the calling task is cancelled.
    public func sleep(for duration: Duration) async throws {
        let id = self.state.withLock { state in
            state.nextID += 1
            return state.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let (resume, watchers) = self.state.withLock {
                    state -> (Result<Void, any Error>?, [CheckedContinuation<Void, Never>]) in
                    if Task.isCancelled { return (.failure(CancellationError()), []) }
                    let deadline = state.now + duration.wholeMilliseconds
                    if deadline <= state.now { return (.success(()), []) }
                    state.sleepers[id] = Sleeper(deadline: deadline, continuation: continuation)
                    let count = state.sleepers.count
                    let ready = state.watchers.filter { $0.count <= count }.map(\.continuation)
                    state.watchers.removeAll { $0.count <= count }
                    return (nil, ready)
                }
                for watcher in watchers { watcher.resume() }
                if let resume { continuation.resume(with: resume) }
            }
        } onCancel: {
            let sleeper = self.state.withLock { $0.sleepers.removeValue(forKey: id) }
            sleeper?.continuation.resume(throwing: CancellationError())
        }
    }
}
