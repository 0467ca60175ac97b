import Synchronization

/// The in-process tier: a map of decoded values, bounded by entries and bytes, that evicts the
/// least recently used entry first.
///
/// Lookups by key move the entry to the front of the recency list. Memoized calls find their
/// entries by their canonical arguments (see `entry(fast:)`) in an index split
/// into independently locked shards, so that hits from many tasks do not wait for each other; such
/// a hit only marks its entry as referenced, and eviction gives a referenced entry a second chance
/// (moves it to the front) instead of evicting it (CLOCK).
///
/// Every operation is O(1) (but removing a namespace, which is O(*n*)); the tier is safe to use
/// from any number of tasks.
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

    /// An entry; a class, so that a lookup reads it without copying (and retaining) each field,
    /// and so that the fast index can refer to it. Every entry is a ``TypedEntry`` of its value's
    /// dynamic type (see ``make(value:cost:storedBytes:namespace:times:)``).
    @usableFromInline
    class Entry: @unchecked Sendable {
        /// What the entry counts against ``Configuration/maxBytes``: its decoded size, and the
        /// argument bytes of its ``fastKey``.
        var cost: Int { self.valueCost + self.fastKeyBytes }
        /// The decoded size of the value and its key.
        let valueCost: Int
        /// The argument bytes of ``fastKey`` that the entry keeps. Under the tier's main lock.
        var fastKeyBytes = 0
        /// The size of its envelope.
        let storedBytes: Int
        let namespace: String
        @usableFromInline let times: EntryTimes
        /// Set by a hit through the fast index, cleared by the second chance it earns at eviction.
        let referenced = Atomic<Bool>(false)
        /// The memoized call's canonical arguments by which the fast index finds this entry.
        /// Read and written under the tier's main lock only (hence `@unchecked`).
        var fastKey: MemoryFastKey? = nil

        fileprivate init(cost: Int, storedBytes: Int, namespace: String, times: EntryTimes) {
            self.valueCost = cost
            self.storedBytes = storedBytes
            self.namespace = namespace
            self.times = times
        }

        /// The value, as a `TypedEntry` holds it.
        @usableFromInline var value: any Sendable { preconditionFailure("every entry is a TypedEntry") }

        /// An entry holding `value` as its dynamic type, so that a hit of the type it expects
        /// reads it without a dynamic cast (see ``value(as:)``).
        static func make(value: any Sendable, cost: Int, storedBytes: Int, namespace: String, times: EntryTimes)
            -> Entry
        {
            func typed<Value: Sendable>(_ value: Value) -> Entry {
                TypedEntry(value: value, cost: cost, storedBytes: storedBytes, namespace: namespace, times: times)
            }
            return typed(value)
        }

        /// The value as a `Value`, or `nil` when it is not one. A check of the entry's class when
        /// the value was stored as a `Value`; a dynamic cast otherwise (a subclass, an existential).
        @inlinable
        final func value<Value: Sendable>(as type: Value.Type) -> Value? {
            if ObjectIdentifier(Swift.type(of: self)) == ObjectIdentifier(TypedEntry<Value>.self) {
                return unsafeDowncast(self, to: TypedEntry<Value>.self).typedValue
            }
            return self.value as? Value
        }
    }

    /// An entry whose value is a `Value`.
    @usableFromInline
    final class TypedEntry<Value: Sendable>: Entry, @unchecked Sendable {
        @usableFromInline let typedValue: Value

        fileprivate init(value: Value, cost: Int, storedBytes: Int, namespace: String, times: EntryTimes) {
            self.typedValue = value
            super.init(cost: cost, storedBytes: storedBytes, namespace: namespace, times: times)
        }

        @usableFromInline override var value: any Sendable { self.typedValue }
    }

    /// How many times one eviction may pass over referenced entries before it evicts one anyway,
    /// which bounds the work of an insert while hits keep marking entries.
    static let maximumSecondChances = 64

    let configuration: Configuration
    /// The entries by persistent key, in recency order.
    private let list: Mutex<LRUList<String, Entry>>
    /// The fast index: entries by the canonical bytes of the memoized call that found them, in
    /// shards chosen by the bytes' hash. It holds exactly the listed entries that have a
    /// ``Entry/fastKey``: every removal from the list removes the entry from it too. Each shard is
    /// alone on its cache lines, so that two cores locking two shards do not contend.
    ///
    /// Lock order: the list's lock may be held while a shard is locked, never the reverse.
    private let fastShards: InlineArray<16, CacheLinePadded<Mutex<[MemoryFastKey: Entry]>>>

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
        self.list = Mutex(LRUList())
        self.fastShards = InlineArray { _ in CacheLinePadded(Mutex([:])) }
    }

    /// Looks `key` up and marks it most recently used. An entry past its stale period is removed.
    func lookup(_ key: String, nowMilliseconds: @autoclosure () -> Int64) -> Lookup {
        self.list.withLock { list in
            guard let index = list.index(forKey: key) else { return .miss }
            let entry = list[index]
            // The clock is read only for entries that expire.
            let state: EntryTimes.State =
                entry.times.freshUntilMilliseconds == .max
                ? .fresh : entry.times.state(atMilliseconds: nowMilliseconds())
            switch state {
            case .fresh:
                list.moveToFront(index)
                return .hit(entry.value, storedBytes: entry.storedBytes, times: entry.times)
            case .stale:
                list.moveToFront(index)
                return .stale(entry.value, storedBytes: entry.storedBytes, times: entry.times)
            case .gone:
                self.remove(at: index, from: &list)
                return .expired
            }
        }
    }

    /// The entry that the memoized call of canonical bytes `fast` was attached to (see
    /// ``attach(_:toKey:)``), whatever its age, marked referenced. Takes only the lock of the key's
    /// shard of the fast index.
    func entry(fast: MemoryFastKey) -> Entry? {
        guard let entry = self.fastShards[fast.shard].value.withLock({ $0[fast] }) else { return nil }
        // A hot entry is marked already: reading the flag first keeps its cache line shared.
        if !entry.referenced.load(ordering: .relaxed) { entry.referenced.store(true, ordering: .relaxed) }
        return entry
    }

    /// The most argument bytes a fast key may have to be attached: a call with longer arguments
    /// (a whole prompt) is found by its persistent key, whose hash costs little next to the call,
    /// instead of keeping its arguments twice.
    static let maximumFastKeyBytes = 1024

    /// Lets `entry(fast:)` find the entry of `key` by `fast`. The fast key's argument bytes are
    /// charged to the entry (and may evict others); a key of more than ``maximumFastKeyBytes`` is
    /// not attached.
    func attach(_ fast: MemoryFastKey, toKey key: String) {
        guard fast.count <= Self.maximumFastKeyBytes else { return }
        self.list.withLock { list in
            guard let index = list.index(forKey: key) else { return }
            let entry = list[index]
            guard entry.fastKey != fast else { return }
            self.detachFastKey(of: entry)
            entry.fastKey = fast
            list.adjustCost(by: fast.count - entry.fastKeyBytes)
            entry.fastKeyBytes = fast.count
            self.fastShards[fast.shard].value.withLock { $0[fast] = entry }
            self.evictOverBounds(&list, keeping: entry)
        }
    }

    /// Inserts or replaces an entry, then evicts entries until within bounds: the least recently
    /// used, but for a referenced one, which is moved to the front instead (at most
    /// ``maximumSecondChances`` times per insert). The entry inserted is never the one evicted.
    ///
    /// An entry larger than ``Configuration/entryLimit`` is not held (and any older one is dropped).
    ///
    /// - Parameter keepingNewer: for a fill from a lower tier: nothing happens when the entry held
    ///   for `key` was made after `entry` (expired or not), so that a fill never puts an older
    ///   copy above a newer one.
    /// - Returns: how many entries were evicted.
    @discardableResult
    func insert(_ entry: Entry, forKey key: String, keepingNewer: Bool = false) -> Int {
        self.list.withLock { list in
            if let index = list.index(forKey: key) {
                if keepingNewer, list[index].times.createdAtMilliseconds > entry.times.createdAtMilliseconds {
                    return 0
                }
                self.detachFastKey(of: list[index])
            }
            guard entry.cost <= min(self.configuration.entryLimit, self.configuration.maxBytes) else {
                if let index = list.index(forKey: key) { self.remove(at: index, from: &list) }
                return 0
            }
            list.insertAtFront(entry, forKey: key)
            return self.evictOverBounds(&list, keeping: entry)
        }
    }

    /// Evicts entries until within bounds: the least recently used, but for a referenced one,
    /// which is moved to the front instead (at most ``maximumSecondChances`` times), and never
    /// `kept`. Returns how many were evicted; the list's lock is held.
    @discardableResult
    private func evictOverBounds(_ list: inout LRUList<String, Entry>, keeping kept: Entry) -> Int {
        var evicted = 0
        var chances = 0
        while list.count > self.configuration.maxEntries || list.totalCost > self.configuration.maxBytes,
            list.count > 1, let tail = list.lastIndex
        {
            let candidate = list[tail]
            if candidate === kept {
                list.moveToFront(tail)
                continue
            }
            if chances < Self.maximumSecondChances, candidate.referenced.load(ordering: .relaxed) {
                candidate.referenced.store(false, ordering: .relaxed)
                list.moveToFront(tail)
                chances += 1
                continue
            }
            self.remove(at: tail, from: &list)
            evicted += 1
        }
        return evicted
    }

    /// Removes the entry of `key`; with `createdBefore`, only if it was made before that time.
    func remove(_ key: String, createdBefore: Int64? = nil) {
        self.list.withLock { list in
            guard let index = list.index(forKey: key) else { return }
            if let createdBefore, list[index].times.createdAtMilliseconds >= createdBefore { return }
            self.remove(at: index, from: &list)
        }
    }

    /// Removes the entries of `namespace`; with `createdBefore`, only those made before that time.
    func removeNamespace(_ namespace: String, createdBefore: Int64? = nil) {
        self.list.withLock { list in
            list.removeAll { entry in
                guard entry.namespace == namespace,
                    createdBefore.map({ entry.times.createdAtMilliseconds < $0 }) ?? true
                else { return false }
                self.detachFastKey(of: entry)
                return true
            }
        }
    }

    /// Removes every entry; with `createdBefore`, only those made before that time.
    func removeAll(createdBefore: Int64? = nil) {
        self.list.withLock { list in
            if let createdBefore {
                list.removeAll { entry in
                    guard entry.times.createdAtMilliseconds < createdBefore else { return false }
                    self.detachFastKey(of: entry)
                    return true
                }
                return
            }
            list = LRUList()
            for shard in self.fastShards.indices { self.fastShards[shard].value.withLock { $0 = [:] } }
        }
    }

    /// How many entries are held.
    public var count: Int { self.list.withLock { $0.count } }
    /// How many bytes are held.
    public var bytes: Int { self.list.withLock { $0.totalCost } }

    /// The keys from most to least recently used (for tests and `panza` diagnostics).
    func keysByRecency() -> [String] { self.list.withLock { $0.keysFromFront() } }

    /// Removes the entry at `index`, from the list and the fast index; the list's lock is held.
    private func remove(at index: Int, from list: inout LRUList<String, Entry>) {
        self.detachFastKey(of: list[index])
        list.remove(at: index)
    }

    /// Removes `entry` from the fast index; the list's lock is held.
    private func detachFastKey(of entry: Entry) {
        guard let fast = entry.fastKey else { return }
        entry.fastKey = nil
        self.fastShards[fast.shard].value.withLock { entries in
            if entries[fast] === entry { entries[fast] = nil }
        }
    }

    func _checkInvariants() {
        self.list.withLock { list in
            list._checkInvariants()
            // The fast index holds exactly the listed entries with a fast key.
            var attached = 0
            list.forEachIndexed { _, entry in
                guard let fast = entry.fastKey else { return }
                attached += 1
                let found = self.fastShards[fast.shard].value.withLock { $0[fast] }
                precondition(found === entry, "the fast index lost an entry")
            }
            var indexed = 0
            for shard in self.fastShards.indices {
                indexed += self.fastShards[shard].value.withLock { entries in
                    for (fast, entry) in entries { precondition(fast.shard == shard && entry.fastKey == fast) }
                    return entries.count
                }
            }
            precondition(indexed == attached, "the fast index holds \(indexed) entries, the list \(attached)")
        }
    }
}
