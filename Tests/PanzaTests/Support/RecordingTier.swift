import Synchronization

@testable import Panza

/// A remote tier in memory, for unit tests of the chain's wiring. It stands behind the
/// `CacheTier` protocol; the S3 tests run the same scenarios against a real S3 server.
///
/// Tests steer it: make it fail (every call, a seeded fraction of applies, or one key for good),
/// hold reads or applies at a gate, or hang.
final class RecordingTier: CacheTier, Sendable {
    struct State {
        var blobs: [String: (namespace: String, blob: [UInt8])] = [:]
        var failing = false
        var reads = 0
        var appliedOperations = 0
        /// Applied operations, in order (for checks of order).
        var log: [String] = []
        /// Reads wait at this gate (after `readsStarted` counts them) while it is set.
        var readGate: Gate?
        var readsStarted = 0
        /// Applies wait at this gate while it is set.
        var applyGate: Gate?
        var appliesStarted = 0
        /// Applies never return.
        var hangs = false
        /// How long each read takes.
        var readDelay: Duration? = nil
        /// Stores of these keys are refused for good (``RejectedOperation``, a permanent failure).
        var rejectedKeys: Set<String> = []
        /// Removals of these keys are refused for good.
        var rejectedRemovals: Set<String> = []
        /// A seeded fraction of applies fail (before applying anything).
        var failureRate = 0.0
        var random = SplitMix64(seed: 1)
    }

    /// The error of a refused operation, which the tier calls permanent.
    struct RejectedOperation: Error {
        var key: String
    }

    let name = "remote"
    let isReadable: Bool
    let isWritable: Bool
    let state = Mutex(State())

    init(readable: Bool = true, writable: Bool = true) {
        self.isReadable = readable
        self.isWritable = writable
    }

    var failing: Bool {
        get { self.state.withLock { $0.failing } }
        set { self.state.withLock { $0.failing = newValue } }
    }

    var keys: Set<String> { self.state.withLock { Set($0.blobs.keys) } }
    var reads: Int { self.state.withLock { $0.reads } }

    /// The stored bytes of `key`.
    func storedBlob(_ key: String) -> [UInt8]? { self.state.withLock { $0.blobs[key]?.blob } }

    func blob(forKey key: CacheKey) async throws -> [UInt8]? {
        let (gate, delay) = self.state.withLock { state in
            state.readsStarted += 1
            return (state.readGate, state.readDelay)
        }
        if let delay { try await Task.sleep(for: delay) }
        // The value is taken before waiting: a slow read returns what the tier held when it started.
        let before = self.state.withLock { $0.blobs[key.rawValue]?.blob }
        if let gate {
            await gate.wait()
            return before
        }
        return try self.state.withLock { state in
            state.reads += 1
            if state.failing { throw TestError(message: "remote down") }
            return state.blobs[key.rawValue]?.blob
        }
    }

    func apply(_ operations: [CacheTierOperation]) async throws {
        let (gate, hangs) = self.state.withLock { state in
            state.appliesStarted += 1
            return (state.applyGate, state.hangs)
        }
        if hangs {
            // Ignores cancellation, as a stuck connection may.
            await Gate().wait()
        }
        if let gate { await gate.wait() }
        try self.state.withLock { state in
            if state.failing { throw TestError(message: "remote down") }
            if state.failureRate > 0, state.random.nextDouble() < state.failureRate {
                throw TestError(message: "injected failure")
            }
            for operation in operations {
                if case .store(let key, _, _) = operation, state.rejectedKeys.contains(key.rawValue) {
                    throw RejectedOperation(key: key.rawValue)
                }
                if case .remove(let key) = operation, state.rejectedRemovals.contains(key.rawValue) {
                    throw RejectedOperation(key: key.rawValue)
                }
            }
            for operation in operations {
                state.appliedOperations += 1
                state.log.append(operation.summary)
                switch operation {
                case .store(let key, let blob, _): state.blobs[key.rawValue] = (key.namespace, blob)
                case .remove(let key): state.blobs[key.rawValue] = nil
                case .removeNamespace(let namespace):
                    state.blobs = state.blobs.filter { $0.value.namespace != namespace }
                case .removeAll: state.blobs = [:]
                }
            }
        }
    }

    func isPermanentFailure(_ error: any Error) -> Bool { error is RejectedOperation }

    func close() async throws {}
}
