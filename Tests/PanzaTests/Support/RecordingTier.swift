import Synchronization

@testable import Panza

/// A remote tier in memory, for unit tests of the chain's wiring. It stands behind the
/// `CacheTier` protocol; the S3 tests run the same scenarios against a real S3 server.
final class RecordingTier: CacheTier, Sendable {
    struct State {
        var blobs: [String: (namespace: String, blob: [UInt8])] = [:]
        var failing = false
        var reads = 0
        var appliedOperations = 0
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

    func blob(forKey key: CacheKey) async throws -> [UInt8]? {
        try self.state.withLock { state in
            state.reads += 1
            if state.failing { throw TestError(message: "remote down") }
            return state.blobs[key.rawValue]?.blob
        }
    }

    func apply(_ operations: [CacheTierOperation]) async throws {
        try self.state.withLock { state in
            if state.failing { throw TestError(message: "remote down") }
            for operation in operations {
                state.appliedOperations += 1
                switch operation {
                case .store(let key, let blob, _): state.blobs[key.rawValue] = (key.namespace, blob)
                case .remove(let key): state.blobs[key.rawValue] = nil
                case .removeNamespace(let namespace): state.blobs = state.blobs.filter { $0.value.namespace != namespace }
                case .removeAll: state.blobs = [:]
                }
            }
        }
    }

    func close() async throws {}
}
