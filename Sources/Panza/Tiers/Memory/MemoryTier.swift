import Synchronization

/// The in-process tier: a least-recently-used map of decoded values, bounded by entries and bytes.
///
/// Every operation is O(1) (but removing a namespace, which is O(*n*)) and takes one short lock;
/// the tier is safe to use from any number of tasks.
public final class MemoryTier: Sendable {
    /// Bounds of the memory tier.
    public struct Configuration: Hashable, Sendable {
        /// The most entries held at once.
        public var maxEntries: Int
        /// The most bytes held at once, counting each entry as its decoded payload (the value's
        /// encoded bytes before compression) plus its key.
        public var maxBytes: Int
        /// The largest entry held: a larger value is served from the tiers below and never evicts
        /// the many small entries it would displace. `nil` (the default) for an eighth of
        /// ``maxBytes``.
        public var maxEntryBytes: Int?

        /// The largest entry held, ``maxEntryBytes`` or an eighth of ``maxBytes``.
        public var entryLimit: Int { self.maxEntryBytes ?? max(1, self.maxBytes / 8) }

        /// Bounds of `maxEntries` entries and `maxBytes` bytes, and entries of at most
        /// `maxEntryBytes` (an eighth of `maxBytes` when `nil`).
        public init(maxEntries: Int = 10_000, maxBytes: Int = 64 << 20, maxEntryBytes: Int? = nil) {
            self.maxEntries = maxEntries
            self.maxBytes = maxBytes
            self.maxEntryBytes = maxEntryBytes
        }
    }

    /// The result of a lookup.
    enum Lookup {
        /// The value, fresh, the size of its envelope (for access traces) and its times.
        case hit(any Sendable, storedBytes: Int, times: EntryTimes)
        /// The value, past its time to live but within its stale period (see ``Freshness``).
        case stale(any Sendable, storedBytes: Int, times: EntryTimes)
        case miss
        case expired
    }

    struct Entry {
        var value: any Sendable
        /// What the entry counts against ``Configuration/maxBytes``: its decoded size.
        var cost: Int
        /// The size of its envelope.
        var storedBytes: Int
        var namespace: String
        var times: EntryTimes
    }

    let configuration: Configuration
    private let state: Mutex<LRUList<String, Entry>>

    /// A memory tier within `configuration`'s bounds.
    ///
    /// - Throws: ``PanzaError/Code/invalidConfiguration`` for bounds that are not positive.
    public init(configuration: Configuration) throws {
        guard configuration.maxEntries > 0, configuration.maxBytes > 0 else {
            throw PanzaError(
                code: .invalidConfiguration,
                message:
                    "memory tier bounds must be positive (maxEntries \(configuration.maxEntries), maxBytes \(configuration.maxBytes))"
            )
        }
        self.configuration = configuration
        self.state = Mutex(LRUList())
    }

    /// Looks `key` up and marks it most recently used. An entry past its stale period is removed.
    func lookup(_ key: String, nowMilliseconds: @autoclosure () -> Int64) -> Lookup {
        self.state.withLock { list in
            guard let index = list.index(forKey: key) else { return .miss }
            let entry = list[index]
            if entry.times.freshUntilMilliseconds == .max {
                list.moveToFront(index)
                return .hit(entry.value, storedBytes: entry.storedBytes, times: entry.times)
            }
            switch entry.times.state(atMilliseconds: nowMilliseconds()) {
            case .fresh:
                list.moveToFront(index)
                return .hit(entry.value, storedBytes: entry.storedBytes, times: entry.times)
            case .stale:
                list.moveToFront(index)
                return .stale(entry.value, storedBytes: entry.storedBytes, times: entry.times)
            case .gone:
                list.remove(at: index)
                return .expired
            }
        }
    }

    /// Inserts or replaces an entry, then evicts least recently used entries until within bounds.
    ///
    /// An entry larger than ``Configuration/entryLimit`` is not held (and any older one is dropped).
    /// - Returns: how many entries were evicted.
    @discardableResult
    func insert(_ entry: Entry, forKey key: String) -> Int {
        self.state.withLock { list in
            guard entry.cost <= min(self.configuration.entryLimit, self.configuration.maxBytes) else {
                if let index = list.index(forKey: key) { list.remove(at: index) }
                return 0
            }
            list.insertAtFront(entry, forKey: key)
            var evicted = 0
            while list.count > self.configuration.maxEntries || list.totalCost > self.configuration.maxBytes {
                list.removeLast()
                evicted += 1
            }
            return evicted
        }
    }

    func remove(_ key: String) {
        self.state.withLock { list in
            if let index = list.index(forKey: key) { list.remove(at: index) }
        }
    }

    func removeNamespace(_ namespace: String) {
        self.state.withLock { list in list.removeAll { $0.namespace == namespace } }
    }

    func removeAll() {
        self.state.withLock { list in list.removeAll { _ in true } }
    }

    /// How many entries are held.
    public var count: Int { self.state.withLock { $0.count } }
    /// How many bytes are held.
    public var bytes: Int { self.state.withLock { $0.totalCost } }

    /// The keys from most to least recently used (for tests and `panza` diagnostics).
    func keysByRecency() -> [String] { self.state.withLock { $0.keysFromFront() } }

    func _checkInvariants() { self.state.withLock { $0._checkInvariants() } }
}
