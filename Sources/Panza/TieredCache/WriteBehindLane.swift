import Logging
import Synchronization

/// The write-behind queue of one tier below memory, and the task that drains it.
///
/// Operations are applied in the order they were made, in batches, each batch in one call of
/// ``CacheTier/apply(_:)`` (one SQLite transaction). Until a batch is applied its operations stay
/// at the head of the queue; when applying fails they are retried with backoff, so nothing is
/// dropped while the process lives. Reads consult the queue's ``shadow(forKey:)`` before the tier,
/// so a value written a moment ago is found even after memory evicted it.
///
/// The queue is bounded by `maxPending` operations: a writer that finds it full waits for room,
/// which bounds both memory and the loss window of a crash.
final class WriteBehindLane: Sendable {
    /// What the queue says about a key before the tier is asked.
    enum Shadow {
        /// The key is not in the queue: ask the tier.
        case none
        /// A store is queued: these are the bytes the tier will hold.
        case stored([UInt8])
        /// A removal is queued: the tier will not hold the key.
        case removed
    }

    private struct PendingOperation {
        var sequence: UInt64
        var operation: CacheTierOperation
        /// Also record it in the outbox for the remote tier (SQLite lanes only).
        var replicate: Bool
    }

    private struct ShadowEntry {
        var sequence: UInt64
        var namespace: String
        var blob: [UInt8]?
    }

    private struct FlushWaiter {
        var target: UInt64
        var continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var pending: [PendingOperation] = []
        var head = 0  // index of the first pending operation; the prefix is compacted lazily
        var shadow: [String: ShadowEntry] = [:]
        var enqueued: UInt64 = 0
        var applied: UInt64 = 0
        var drainer: CheckedContinuation<Void, Never>?
        var flushWaiters: [FlushWaiter] = []
        var roomWaiters: [CheckedContinuation<Void, Never>] = []
        var isClosing = false

        var count: Int { self.pending.count - self.head }
    }

    let tier: any CacheTier
    private let maxPending: Int
    private let maxBatch: Int
    private let statistics: StatisticsRecorder
    private let logger: Logger
    private let state = Mutex(State())

    /// Called after each applied batch that carried replicated operations.
    private let onReplicated: @Sendable () -> Void

    init(
        tier: any CacheTier,
        maxPending: Int,
        maxBatch: Int,
        statistics: StatisticsRecorder,
        logger: Logger,
        onReplicated: @escaping @Sendable () -> Void = {}
    ) {
        self.onReplicated = onReplicated
        self.tier = tier
        self.maxPending = maxPending
        self.maxBatch = maxBatch
        self.statistics = statistics
        self.logger = logger
    }

    /// Operations waiting to be applied.
    var pendingCount: Int { self.state.withLock { $0.count } }

    /// What the queue holds for `key`.
    func shadow(forKey key: String) -> Shadow {
        self.state.withLock { state in
            guard let entry = state.shadow[key] else { return .none }
            return entry.blob.map { .stored($0) } ?? .removed
        }
    }

    /// Queues `operation`, waiting for room when the queue is full.
    ///
    /// - Returns: the operation's sequence number, for ``waitUntilApplied(_:)``.
    @discardableResult
    func enqueue(_ operation: CacheTierOperation, replicate: Bool = false) async -> UInt64 {
        while true {
            enum Outcome { case queued(UInt64, CheckedContinuation<Void, Never>?), full }
            let outcome: Outcome = self.state.withLock { state in
                guard state.count < self.maxPending || state.isClosing else { return .full }
                state.enqueued += 1
                let sequence = state.enqueued
                state.pending.append(PendingOperation(sequence: sequence, operation: operation, replicate: replicate))
                switch operation {
                case .store(let key, let blob, _):
                    state.shadow[key.rawValue] = ShadowEntry(sequence: sequence, namespace: key.namespace, blob: blob)
                case .remove(let key):
                    state.shadow[key.rawValue] = ShadowEntry(sequence: sequence, namespace: key.namespace, blob: nil)
                case .removeNamespace(let namespace):
                    state.shadow = state.shadow.filter { $0.value.namespace != namespace }
                case .removeAll:
                    state.shadow = [:]
                }
                let drainer = state.drainer
                state.drainer = nil
                return .queued(sequence, drainer)
            }
            switch outcome {
            case .queued(let sequence, let drainer):
                drainer?.resume()
                return sequence
            case .full:
                await withCheckedContinuation { continuation in
                    let resumeNow = self.state.withLock { state in
                        if state.count < self.maxPending || state.isClosing { return true }
                        state.roomWaiters.append(continuation)
                        return false
                    }
                    if resumeNow { continuation.resume() }
                }
            }
        }
    }

    /// The sequence number of the newest queued operation.
    var lastEnqueued: UInt64 { self.state.withLock { $0.enqueued } }

    /// Returns once every operation up to `sequence` is applied.
    ///
    /// - Throws: the tier's error when a batch fails while waiting; the operations stay queued and
    ///   are retried.
    func waitUntilApplied(_ sequence: UInt64) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let done = self.state.withLock { state in
                if state.applied >= sequence { return true }
                state.flushWaiters.append(FlushWaiter(target: sequence, continuation: continuation))
                return false
            }
            if done { continuation.resume() }
        }
    }

    /// Drains the queue until ``close()`` is called and the queue is empty. Run it in a task.
    func run() async {
        var backoff = Duration.milliseconds(50)
        while let batch = await self.nextBatch() {
            do {
                let replicated = batch.contains { $0.replicate }
                if replicated, let sqlite = self.tier as? SQLiteTier {
                    try await sqlite.applyReplicating(batch.map { ($0.operation, $0.replicate) })
                } else {
                    try await self.tier.apply(batch.map(\.operation))
                }
                self.applied(batch)
                if replicated { self.onReplicated() }
                backoff = .milliseconds(50)
            } catch {
                self.failed(error)
                self.logger.warning(
                    "panza: write-behind batch failed; it stays queued and will be retried",
                    metadata: ["tier": "\(self.tier.name)", "operations": "\(batch.count)", "error": "\(error)"]
                )
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(5))
            }
        }
    }

    /// Lets the drainer stop once the queue is empty.
    func close() {
        let (drainer, roomWaiters) = self.state.withLock { state in
            state.isClosing = true
            defer {
                state.drainer = nil
                state.roomWaiters = []
            }
            return (state.drainer, state.roomWaiters)
        }
        drainer?.resume()
        roomWaiters.forEach { $0.resume() }
    }

    private func nextBatch() async -> [PendingOperation]? {
        while true {
            enum Next { case batch([PendingOperation]), finished, wait }
            let next: Next = self.state.withLock { state in
                if state.count > 0 {
                    let end = min(state.pending.count, state.head + self.maxBatch)
                    return .batch(Array(state.pending[state.head..<end]))
                }
                return state.isClosing ? .finished : .wait
            }
            switch next {
            case .batch(let batch): return batch
            case .finished: return nil
            case .wait:
                await withCheckedContinuation { continuation in
                    let resumeNow = self.state.withLock { state in
                        if state.count > 0 || state.isClosing { return true }
                        state.drainer = continuation
                        return false
                    }
                    if resumeNow { continuation.resume() }
                }
            }
        }
    }

    private func applied(_ batch: [PendingOperation]) {
        var bytes = 0
        for item in batch {
            if case .store(_, let blob, _) = item.operation { bytes += blob.count }
        }
        self.statistics.add(.writeBatches)
        self.statistics.add(.bytesWritten, bytes)
        let last = batch.last!.sequence
        let (flushed, room) = self.state.withLock { state in
            state.head += batch.count
            if state.head > 1024 && state.head * 2 > state.pending.count {
                state.pending.removeFirst(state.head)
                state.head = 0
            }
            for item in batch {
                let key: String
                switch item.operation {
                case .store(let cacheKey, _, _), .remove(let cacheKey): key = cacheKey.rawValue
                case .removeNamespace, .removeAll: continue
                }
                if let entry = state.shadow[key], entry.sequence == item.sequence {
                    state.shadow[key] = nil
                }
            }
            state.applied = last
            var flushed: [CheckedContinuation<Void, any Error>] = []
            state.flushWaiters.removeAll { waiter in
                guard waiter.target <= last else { return false }
                flushed.append(waiter.continuation)
                return true
            }
            let room = state.roomWaiters
            state.roomWaiters = []
            return (flushed, room)
        }
        flushed.forEach { $0.resume() }
        room.forEach { $0.resume() }
    }

    private func failed(_ error: any Error) {
        self.statistics.add(.writeFailures)
        let waiters = self.state.withLock { state in
            defer { state.flushWaiters = [] }
            return state.flushWaiters
        }
        for waiter in waiters {
            waiter.continuation.resume(throwing: error)
        }
    }
}
