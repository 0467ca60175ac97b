import Logging
import Synchronization

/// Memory, probed: every way a call looks in the memory tier (the memoize fast paths, the plain
/// lookup and the read-through's look), each counting the same way and judging freshness with
/// the entry's times.
extension TieredCache {
    @inline(__always)
    func memoryLookup<Value: Sendable>(_ key: CacheKey, as _: Value.Type) throws -> Value? {
        guard let stored = self.memoryLookupUntyped(key) else { return nil }
        guard let value = stored as? Value else { throw Self.typeMismatch(stored, Value.self, key: key) }
        return value
    }

    /// Looks `key` up in memory and counts the hit or miss.
    @usableFromInline
    func memoryLookupUntyped(_ key: CacheKey) -> (any Sendable)? {
        guard let memory = self.memory else { return nil }
        switch memory.lookup(key.rawValue, nowMilliseconds: self.clock.nowMilliseconds()) {
        case .hit(let stored, let storedBytes, _):
            self.recorder.add(.memoryHits)
            self.trace?.record(key: key.rawValue, size: storedBytes, source: .memory, latency: .zero)
            return stored
        case .stale:
            // Kept for callers whose freshness serves it; not for this one.
            self.recorder.add(.memoryMisses)
            return nil
        case .expired:
            self.recorder.add(.expired)
            self.recorder.add(.memoryMisses)
            return nil
        case .miss:
            self.recorder.add(.memoryMisses)
            return nil
        }
    }

    /// Looks `key` up in memory, with the entry's times. A fresh entry counts as a memory hit; a
    /// stale one as a miss (``CacheStatistics/staleHits`` counts it when it is served).
    func memoryEntry<Value: Sendable>(_ key: CacheKey, as _: Value.Type) throws -> MemoryEntry<Value> {
        guard let memory = self.memory else { return .miss }
        switch memory.lookup(key.rawValue, nowMilliseconds: self.clock.nowMilliseconds()) {
        case .hit(let stored, let storedBytes, let times):
            guard let value = stored as? Value else { throw Self.typeMismatch(stored, Value.self, key: key) }
            self.recorder.add(.memoryHits)
            self.configuration.trace?.record(key: key.rawValue, size: storedBytes, source: .memory, latency: .zero)
            return .fresh(value, times)
        case .stale(let stored, _, let times):
            self.recorder.add(.memoryMisses)
            guard let value = stored as? Value else { throw Self.typeMismatch(stored, Value.self, key: key) }
            return .stale(StaleEntry(value: value, times: times))
        case .expired:
            self.recorder.add(.expired)
            self.recorder.add(.memoryMisses)
            return .miss
        case .miss:
            self.recorder.add(.memoryMisses)
            return .miss
        }
    }

    /// The fresh value memory holds for `key` as a `Value`, not counted as a hit or a miss (the
    /// caller's first look in memory was counted).
    func freshInMemory<Value: Sendable>(_ key: CacheKey, as _: Value.Type) -> (value: Value, times: EntryTimes)? {
        guard let memory = self.memory,
            case .hit(let stored, _, let times) = memory.lookup(
                key.rawValue, nowMilliseconds: self.clock.nowMilliseconds()),
            let value = stored as? Value
        else { return nil }
        return (value, times)
    }

    /// The result of ``probeMemory(_:as:)``.
    @usableFromInline
    enum MemoryProbe<Value> {
        case hit(Value)
        case miss
        /// Memory was not consulted (a bust mode is on, or the cache is closed).
        case skipped

        @inlinable
        var isMiss: Bool {
            if case .miss = self { return true }
            return false
        }
    }

    /// The memory fast path of memoized calls: a hit without building the loader closure.
    ///
    /// - Parameter refreshAhead: the caller's ``Freshness/refreshAhead``: a hit it makes due for
    ///   a refresh is left to the full path (``MemoryProbe/skipped``), as is a stale entry.
    ///   - attaching: the memoized call's canonical bytes, by which the entry found is found next
    ///     time (see ``probeMemory(fast:as:refreshAhead:)``).
    @inlinable
    func probeMemory<Value: Sendable>(
        _ key: CacheKey,
        as type: Value.Type,
        refreshAhead: Double? = nil,
        attaching fast: MemoryFastKey? = nil
    ) throws -> MemoryProbe<Value> {
        guard let stored = self.probeMemoryUntyped(key, refreshAhead: refreshAhead, attaching: fast) else {
            return .skipped
        }
        switch stored {
        case .some(let stored):
            guard let value = stored as? Value else { throw Self.typeMismatch(stored, Value.self, key: key) }
            return .hit(value)
        case .none:
            return .miss
        }
    }

    /// `nil` when memory is skipped (or holds an entry the full path must see: stale, or due for
    /// a refresh); `.some(nil)` on a miss. Counts the hit or miss.
    @usableFromInline
    func probeMemoryUntyped(_ key: CacheKey, refreshAhead: Double?, attaching fast: MemoryFastKey?) -> (any Sendable)??
    {
        guard let memory = self.memory, !self.fence.isClosed,
            !self.bustModeActive.load(ordering: .relaxed)
        else {
            return nil
        }
        switch memory.lookup(key.rawValue, nowMilliseconds: self.clock.nowMilliseconds()) {
        case .hit(let stored, let storedBytes, let times):
            if let ratio = refreshAhead, times.isRefreshDue(atMilliseconds: self.clock.nowMilliseconds(), ratio: ratio)
            {
                return nil
            }
            if let fast, self.trace == nil { memory.attach(fast, toKey: key.rawValue) }
            self.recorder.add(.memoryHits)
            self.trace?.record(key: key.rawValue, size: storedBytes, source: .memory, latency: .zero)
            return .some(stored)
        case .stale:
            return nil
        case .expired:
            self.recorder.add(.expired)
            self.recorder.add(.memoryMisses)
            return .some(nil)
        case .miss:
            self.recorder.add(.memoryMisses)
            return .some(nil)
        }
    }

    /// The memory fast path of memoized calls with their default keys: a fresh entry found by the
    /// call's canonical bytes, without its persistent key. Anything else (a miss, a stale entry,
    /// one due for a refresh, an access trace being recorded) is ``MemoryProbe/skipped``, for
    /// ``probeMemory(_:as:refreshAhead:attaching:)``; only a hit is counted.
    @inlinable
    func probeMemory<Value: Sendable>(
        fast: MemoryFastKey,
        as type: Value.Type,
        refreshAhead: Double?
    ) throws -> MemoryProbe<Value> {
        guard let entry = self.probeMemoryFast(fast, refreshAhead: refreshAhead) else { return .skipped }
        guard let value = entry.value(as: Value.self) else {
            throw PanzaError(
                code: .typeMismatch,
                message: "the value in memory is a \(Swift.type(of: entry.value)), not a \(Value.self)"
            )
        }
        return .hit(value)
    }

    /// The fresh entry the fast index holds for `fast`, counted as a hit; `nil` for anything else.
    @usableFromInline
    func probeMemoryFast(_ fast: MemoryFastKey, refreshAhead: Double?) -> MemoryTier.Entry? {
        guard let memory = self.unretainedMemory, self.trace == nil, !self.fence.isClosed,
            !self.bustModeActive.load(ordering: .relaxed),
            let entry = memory._withUnsafeGuaranteedRef({ $0.entry(fast: fast) })
        else {
            return nil
        }
        let times = entry.times
        if times.freshUntilMilliseconds != .max {
            let now = self.clock.nowMilliseconds()
            guard case .fresh = times.state(atMilliseconds: now) else { return nil }
            if let ratio = refreshAhead, times.isRefreshDue(atMilliseconds: now, ratio: ratio) { return nil }
        }
        self.unretainedRecorder._withUnsafeGuaranteedRef { $0.add(.memoryHits) }
        return entry
    }

    /// The number of the memoized function whose persistent keys start with `prefix`, for its
    /// fast keys: the same number for every ``Memoized`` of the same id and arity. A cache keeps
    /// one small entry per such function for its life.
    func fastKeyFunction(forPrefix prefix: [UInt8]) -> UInt32 {
        self.fastKeyFunctions.withLock { functions in
            if let number = functions[prefix] { return number }
            let number = UInt32(functions.count)
            functions[prefix] = number
            return number
        }
    }

    @usableFromInline
    static func typeMismatch(_ stored: any Sendable, _ expected: Any.Type, key: CacheKey) -> PanzaError {
        PanzaError(
            code: .typeMismatch,
            message: "the value in memory is a \(type(of: stored)), not a \(expected)",
            key: key.rawValue
        )
    }
}
