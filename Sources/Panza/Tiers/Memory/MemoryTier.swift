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

    /// An entry; a class, so that a lookup reads it without copying (and retaining) each field.
    /// Only ``fastKey`` changes after the entry is made, and only under the tier's lock (hence
    /// `@unchecked`).
    final class Entry: @unchecked Sendable {
        let value: any Sendable
        /// What the entry counts against ``Configuration/maxBytes``: its decoded size.
        let cost: Int
        /// The size of its envelope.
        let storedBytes: Int
        let namespace: String
        let times: EntryTimes
        /// The memoized call's canonical arguments that last found this entry, by which
        /// ``lookup(fast:nowMilliseconds:)`` finds it again without the persistent key.
        var fastKey: MemoryFastKey? = nil

        init(value: any Sendable, cost: Int, storedBytes: Int, namespace: String, times: EntryTimes) {
            self.value = value
            self.cost = cost
            self.storedBytes = storedBytes
            self.namespace = namespace
            self.times = times
        }
    }

    /// The entries by persistent key, in recency order, and a second index of some of them by
    /// the canonical bytes of the memoized call that last found them.
    ///
    /// The second index is kept lazily: an entry removed, evicted or replaced leaves its mapping
    /// behind, and a lookup through it checks that the slot still holds an entry with that fast key.
    /// It is swept when it grows past twice the entries.
    private struct State {
        var list = LRUList<String, Entry>()
        var fast: [MemoryFastKey: Int] = [:]

        mutating func sweepFastIndex() {
            var fast: [MemoryFastKey: Int] = [:]
            self.list.forEachIndexed { index, entry in
                if let key = entry.fastKey { fast[key] = index }
            }
            self.fast = fast
        }
    }

    let configuration: Configuration
    private let state: Mutex<State>

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
        self.state = Mutex(State())
    }

    /// Looks `key` up and marks it most recently used. An entry past its stale period is removed.
    func lookup(_ key: String, nowMilliseconds: @autoclosure () -> Int64) -> Lookup {
        self.state.withLock { state in
            guard let index = state.list.index(forKey: key) else { return .miss }
            let now = state.list[index].times.freshUntilMilliseconds == .max ? 0 : nowMilliseconds()
            return Self.lookup(at: index, in: &state, nowMilliseconds: now)
        }
    }

    /// Looks up the entry that the memoized call of canonical bytes `fast` found last (see
    /// ``attach(_:toKey:)``); `.miss` when there is none, or when its slot holds another entry now.
    func lookup(fast: MemoryFastKey, nowMilliseconds: @autoclosure () -> Int64) -> Lookup {
        self.state.withLock { state in
            guard let index = state.fast[fast] else { return .miss }
            guard let entry = state.list.element(at: index), entry.fastKey == fast else {
                state.fast[fast] = nil
                return .miss
            }
            let now = entry.times.freshUntilMilliseconds == .max ? 0 : nowMilliseconds()
            return Self.lookup(at: index, in: &state, nowMilliseconds: now)
        }
    }

    /// Lets ``lookup(fast:nowMilliseconds:)`` find the entry of `key` by `fast`.
    func attach(_ fast: MemoryFastKey, toKey key: String) {
        self.state.withLock { state in
            guard let index = state.list.index(forKey: key) else { return }
            state.list.update(at: index) { $0.fastKey = fast }
            state.fast[fast] = index
            if state.fast.count > 2 * state.list.count + 64 { state.sweepFastIndex() }
        }
    }

    /// The lookup of the occupied slot `index`; `nowMilliseconds` is read only for entries that expire.
    private static func lookup(at index: Int, in state: inout State, nowMilliseconds: Int64) -> Lookup {
        let entry = state.list[index]
        if entry.times.freshUntilMilliseconds == .max {
            state.list.moveToFront(index)
            return .hit(entry.value, storedBytes: entry.storedBytes, times: entry.times)
        }
        switch entry.times.state(atMilliseconds: nowMilliseconds) {
        case .fresh:
            state.list.moveToFront(index)
            return .hit(entry.value, storedBytes: entry.storedBytes, times: entry.times)
        case .stale:
            state.list.moveToFront(index)
            return .stale(entry.value, storedBytes: entry.storedBytes, times: entry.times)
        case .gone:
            state.list.remove(at: index)
            return .expired
        }
    }

    /// Inserts or replaces an entry, then evicts least recently used entries until within bounds.
    ///
    /// An entry larger than ``Configuration/entryLimit`` is not held (and any older one is dropped).
    /// - Returns: how many entries were evicted.
    @discardableResult
    func insert(_ entry: Entry, forKey key: String) -> Int {
        self.state.withLock { state in
            guard entry.cost <= min(self.configuration.entryLimit, self.configuration.maxBytes) else {
                if let index = state.list.index(forKey: key) { state.list.remove(at: index) }
                return 0
            }
            state.list.insertAtFront(entry, forKey: key)
            var evicted = 0
            while state.list.count > self.configuration.maxEntries || state.list.totalCost > self.configuration.maxBytes
            {
                state.list.removeLast()
                evicted += 1
            }
            return evicted
        }
    }

    func remove(_ key: String) {
        self.state.withLock { state in
            if let index = state.list.index(forKey: key) { state.list.remove(at: index) }
        }
    }

    func removeNamespace(_ namespace: String) {
        self.state.withLock { state in state.list.removeAll { $0.namespace == namespace } }
    }

    func removeAll() {
        self.state.withLock { state in state = State() }
    }

    /// How many entries are held.
    public var count: Int { self.state.withLock { $0.list.count } }
    /// How many bytes are held.
    public var bytes: Int { self.state.withLock { $0.list.totalCost } }

    /// The keys from most to least recently used (for tests and `panza` diagnostics).
    func keysByRecency() -> [String] { self.state.withLock { $0.list.keysFromFront() } }

    func _checkInvariants() {
        self.state.withLock { state in
            state.list._checkInvariants()
            // Every entry with a fast key is reachable by it (mappings left behind by removals are
            // allowed: they are checked, never followed blindly).
            state.list.forEachIndexed { index, entry in
                if let key = entry.fastKey { precondition(state.fast[key] == index, "fast index lost an entry") }
            }
        }
    }
}

/// The canonical argument bytes of a memoized call (id included), by which the memory tier finds
/// the call's entry without computing its SHA-256 persistent key.
@usableFromInline
struct MemoryFastKey: Hashable, Sendable {
    @usableFromInline let bytes: [UInt8]

    @inlinable
    init(_ bytes: [UInt8]) { self.bytes = bytes }

    @inlinable
    func hash(into hasher: inout Hasher) {
        self.bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
    }

    @inlinable
    static func == (lhs: MemoryFastKey, rhs: MemoryFastKey) -> Bool { lhs.bytes == rhs.bytes }
}
