/// An async function whose results are cached in a ``TieredCache``, made by
/// ``TieredCache/memoize(id:timeToLive:freshness:limits:concurrencyKey:key:rawKey:_:)``.
///
/// ```swift
/// let forecast = cache.memoize(id: "forecast") { (city: String, days: Int) async throws -> Forecast in
///     try await api.forecast(city: city, days: days)
/// }
/// let f = try await forecast("Oslo", 3)                  // cached
/// let cached = try await forecast.peek("Oslo", 3)        // never calls the function
/// try await forecast.bust("Oslo", 3)                     // forget one call
/// try await forecast.bustAll()                           // forget every call of this id
/// ```
public struct Memoized<each Argument: Encodable & Sendable, Value: Codable & Sendable>: Sendable {
    /// The id that namespaces this function's entries (Python panza's `fn_id`).
    public let id: String
    /// The cache the results live in.
    public let cache: TieredCache
    @usableFromInline let timeToLive: Duration?
    /// The call's freshness: the memoize call's, else the cache's default.
    @usableFromInline let freshness: Freshness?
    @usableFromInline let function: @Sendable @concurrent (repeat each Argument) async throws -> Value
    @usableFromInline let customKey: (@Sendable (repeat each Argument) throws -> String)?
    /// Whether the key is the default one, the hash of the canonical arguments (no ``customKey``).
    @usableFromInline let usesCanonicalKey: Bool
    /// Whether ``customKey``'s output is used as it is (`rawKey:`) instead of hashed (`key:`).
    @usableFromInline let keyIsRaw: Bool
    /// Calls, loads and failures of this id, for metrics; `nil` when the cache reports none.
    @usableFromInline let counters: IdCounters?
    @usableFromInline let limits: LoadLimits?
    @usableFromInline let concurrencyKey: (@Sendable (repeat each Argument) -> String)?
    /// What the persistent key hashes before the arguments (``MemoizeKey/canonicalPrefix(id:argumentCount:)``).
    @usableFromInline let keyPrefix: [UInt8]
    /// The number by which the memory tier's fast index tells this function's calls from others'.
    @usableFromInline let fastKeyFunction: UInt32

    init(
        id: String,
        cache: TieredCache,
        timeToLive: Duration?,
        freshness: Freshness?,
        customKey: (@Sendable (repeat each Argument) throws -> String)?,
        keyIsRaw: Bool = false,
        limits: LoadLimits?,
        concurrencyKey: (@Sendable (repeat each Argument) -> String)?,
        function: @escaping @Sendable @concurrent (repeat each Argument) async throws -> Value
    ) {
        self.limits = limits
        self.concurrencyKey = concurrencyKey
        self.id = id
        self.cache = cache
        self.timeToLive = timeToLive
        self.freshness = freshness ?? cache.configuration.defaultFreshness
        self.customKey = customKey
        if case .some = customKey { self.usesCanonicalKey = false } else { self.usesCanonicalKey = true }
        self.keyIsRaw = keyIsRaw
        self.counters = cache.metricsReporter == nil ? nil : cache.counters(forID: id)
        self.function = function
        var argumentCount = 0
        for _ in repeat (each Argument).self { argumentCount += 1 }
        self.keyPrefix = MemoizeKey.canonicalPrefix(id: id, argumentCount: argumentCount)
        self.fastKeyFunction = cache.fastKeyFunction(forPrefix: self.keyPrefix)
    }

    /// Returns the cached result for these arguments, or calls the function and caches its result.
    ///
    /// Concurrent identical calls share one function call. Honors ``CacheModes``.
    @inlinable
    public func callAsFunction(_ argument: repeat each Argument) async throws -> Value {
        self.counters?.recordCall()
        let key: CacheKey
        let fast: MemoryFastKey?
        let refreshAhead = self.freshness?.refreshAhead
        if self.usesCanonicalKey {
            // The memory tier finds a call it answered before by its canonical arguments: no
            // SHA-256 on a hit. The persistent key is computed on a miss, and the entry it finds
            // is then found by these bytes too.
            // The arguments' bytes are built inline (no allocation) when they are short.
            // A pack expansion, not a `for` loop over the pack: each append is then specialized
            // for its argument's type.
            var builder = MemoryFastKey.Builder()
            repeat try builder.append(each argument)
            let fastKey = builder.key(function: self.fastKeyFunction)
            if case .hit(let value) = try self.cache.probeMemory(
                fast: fastKey, as: Value.self, refreshAhead: refreshAhead)
            {
                return value
            }
            key = MemoizeKey.key(id: self.id, prefix: self.keyPrefix, arguments: fastKey)
            fast = fastKey
        } else {
            key = try self.key(repeat each argument)
            fast = nil
        }
        let probe = try self.cache.probeMemory(key, as: Value.self, refreshAhead: refreshAhead, attaching: fast)
        if case .hit(let value) = probe { return value }
        if let value = self.cache.localHit(key, as: Value.self, refreshAhead: refreshAhead) { return value }
        return try await self.readThrough(key: key, memoryChecked: probe.isMiss, repeat each argument)
    }

    /// The read-through call behind a memory miss that the SQLite tier's inline readers did not
    /// answer.
    @inlinable
    func readThrough(key: CacheKey, memoryChecked: Bool, _ argument: repeat each Argument) async throws -> Value {
        let function = self.function
        return try await self.cache.readThrough(
            key: key,
            id: self.id,
            timeToLive: self.timeToLive,
            memoryChecked: memoryChecked,
            localChecked: true,
            limits: self.limits,
            concurrencyKey: self.concurrencyKey?(repeat each argument),
            freshness: self.freshness
        ) {
            try await function(repeat each argument)
        }
    }

    /// Returns the cached result for these arguments, or `nil`; never calls the function
    /// (Python panza's `read_cache`).
    public func peek(_ argument: repeat each Argument) async throws -> Value? {
        try await self.cache.lookup(try self.key(repeat each argument), as: Value.self)
    }

    /// Whether a result is cached for these arguments; never calls the function.
    ///
    /// For a function whose result is optional, this tells a cached `nil` from nothing cached,
    /// which `peek` (flattened to one optional) does not.
    public func isCached(_ argument: repeat each Argument) async throws -> Bool {
        try await self.cache.lookup(try self.key(repeat each argument), as: Value.self) != nil
    }

    /// Removes the cached result for these arguments from every tier.
    public func bust(_ argument: repeat each Argument) async throws {
        try await self.cache.remove(.remove(try self.key(repeat each argument)))
    }

    /// Removes every cached result of this id from every tier.
    public func bustAll() async throws {
        try await self.cache.remove(.removeNamespace(self.id))
    }

    /// The key under which the result for these arguments is stored.
    @inlinable
    public func key(_ argument: repeat each Argument) throws -> CacheKey {
        if let customKey = self.customKey {
            let output = try customKey(repeat each argument)
            return self.keyIsRaw
                ? try MemoizeKey.make(id: self.id, rawKey: output) : try MemoizeKey.make(id: self.id, customKey: output)
        }
        // Inlined, so that argument encoding is specialized for the caller's types.
        return try MemoizeKey.make(id: self.id, arguments: repeat each argument)
    }
}

extension Memoized {
    /// Returns the cached result of a function whose result is optional, or `nil` when there is
    /// none: one optional, not two. A cached `nil` and no cached result both read as `nil`;
    /// ``isCached(_:)`` tells them apart. Never calls the function.
    public func peek<Wrapped>(_ argument: repeat each Argument) async throws -> Wrapped? where Value == Wrapped? {
        try await self.cache.lookup(try self.key(repeat each argument), as: Value.self) ?? nil
    }
}

extension TieredCache {
    /// Wraps `function` so that its results are cached under `id`.
    ///
    /// - Parameters:
    ///   - id: names the function's entries; keep it stable across releases, and change it when
    ///     the function's results change meaning. 1 to 200 bytes, without `/`, not `.` or `..`, and
    ///     not starting with `_` (reserved).
    ///   - timeToLive: how long results live; `nil` for ``Configuration/defaultTimeToLive``.
    ///   - freshness: stale-while-revalidate, fail-safe, loader timeouts and refresh-ahead for the
    ///     function's calls (see ``Freshness``); `nil` for ``Configuration/defaultFreshness``.
    ///   - limits: rate and concurrency limits on calls of `function` (hits are never limited).
    ///   - concurrencyKey: derives the key of ``LoadLimits/concurrencyLimiter`` from the arguments
    ///     (Python panza's `limit_concurrency(n, derive_key)`); by default one limit for all calls.
    ///   - key: a custom key function (Python panza's `hash_func`): its output, of any length (a
    ///     whole prompt is fine), is hashed with SHA-256 into `{id}/{hash}`, as Python panza does.
    ///     By default the SHA-256 of the canonically encoded arguments (see ``MemoizeKey``).
    ///   - rawKey: a key function whose output is the key as it is, `{id}/{output}`: readable in
    ///     `panza ls`, but at most ``maximumKeyLength`` UTF-8 bytes in all (longer ones throw
    ///     ``PanzaError/Code/invalidKey``), and two functions that return the same text share an
    ///     entry. Give `key` or `rawKey`, not both.
    ///   - function: the function to memoize.
    /// - Precondition: `id` is valid, `key` and `rawKey` are not both given, and `freshness` is
    ///   valid (programming errors).
    public func memoize<each Argument: Encodable & Sendable, Value: Codable & Sendable>(
        id: String,
        timeToLive: Duration? = nil,
        freshness: Freshness? = nil,
        limits: LoadLimits? = nil,
        concurrencyKey: (@Sendable (repeat each Argument) -> String)? = nil,
        key: (@Sendable (repeat each Argument) throws -> String)? = nil,
        rawKey: (@Sendable (repeat each Argument) throws -> String)? = nil,
        _ function: @escaping @Sendable @concurrent (repeat each Argument) async throws -> Value
    ) -> Memoized<repeat each Argument, Value> {
        precondition(
            Self.isValidID(id),
            "memoize id must have 1 to 200 UTF-8 bytes, no '/', no '.' or '..' alone, and not start with '_': \(id)"
        )
        if let freshness {
            do { try freshness.validate() } catch { preconditionFailure("\(error)") }
        }
        var customKey = key
        var keyIsRaw = false
        if let rawKey {
            if case .some = key { preconditionFailure("memoize takes a key function or a raw key function, not both") }
            customKey = rawKey
            keyIsRaw = true
        }
        return Memoized(
            id: id,
            cache: self,
            timeToLive: timeToLive,
            freshness: freshness,
            customKey: customKey,
            keyIsRaw: keyIsRaw,
            limits: limits,
            concurrencyKey: concurrencyKey,
            function: function
        )
    }

    /// 1 to 200 bytes, no `/`, not `.` or `..` (object-key path segments), and no leading `_`
    /// (reserved: plain keys live under `_keys/` in a bucket).
    static func isValidID(_ id: String) -> Bool {
        !id.isEmpty && id.utf8.count <= 200 && !id.utf8.contains(UInt8(ascii: "/")) && id != "." && id != ".."
            && !id.hasPrefix("_")
    }

    static func validated(_ key: CacheKey) throws -> CacheKey {
        guard key.rawValue.utf8.count <= maximumKeyLength else {
            throw PanzaError(
                code: .invalidKey,
                message: "a key must have at most \(maximumKeyLength) UTF-8 bytes, not \(key.rawValue.utf8.count)",
                key: String(key.rawValue.prefix(80))
            )
        }
        return key
    }
}
