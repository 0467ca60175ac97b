/// How the memory tier finds the entry of a memoized call without computing its SHA-256 persistent
/// key: the number of the memoized function (its id and arity, numbered by the cache) and the
/// canonical bytes of the call's arguments.
///
/// Up to ``inlineCapacity`` argument bytes are held inline, so that building the key of a call with
/// a few short strings and numbers allocates nothing; longer ones are held in an array. Either way
/// the key carries a 64-bit hash of its bytes, keyed by a secret chosen when the process starts:
/// the fast index's dictionaries and shards use it instead of hashing the bytes again, and keys
/// crafted to collide cannot be made without the secret.
@usableFromInline
struct MemoryFastKey: Hashable, Sendable {
    /// The inline storage: six words, 48 bytes, zero past ``count``.
    @usableFromInline typealias Words = (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64)

    /// The most argument bytes held inline.
    @inlinable static var inlineCapacity: Int { 48 }

    /// The memoized function (see `TieredCache.fastKeyFunction(forPrefix:)`).
    @usableFromInline let function: UInt32
    /// How many argument bytes the key has.
    @usableFromInline let count: Int
    /// The bytes when they fit inline; all zero when they do not.
    @usableFromInline let words: Words
    /// The bytes when they do not fit inline (more than ``inlineCapacity``).
    @usableFromInline let spilled: [UInt8]?
    /// A keyed 64-bit hash of the function and the bytes.
    @usableFromInline let hash: UInt64

    /// The shard of the fast index that holds this key.
    @inlinable var shard: Int { Int(truncatingIfNeeded: self.hash >> 60) }

    @inlinable
    init(function: UInt32, count: Int, words: Words, spilled: [UInt8]?) {
        self.function = function
        self.count = count
        self.words = words
        self.spilled = spilled
        let header = UInt64(function) << 32 ^ UInt64(truncatingIfNeeded: count)
        if let spilled {
            self.hash = Self.hash(header: header, bytes: spilled)
        } else {
            let secret = Self.secret
            let body =
                Self.fold(words.0 ^ secret.0, words.1 ^ secret.1) ^ Self.fold(words.2 ^ secret.2, words.3 ^ secret.3)
                ^ Self.fold(words.4 ^ secret.4, words.5 ^ secret.5)
            self.hash = Self.fold(body ^ secret.6, header ^ secret.7)
        }
    }

    /// The key of `function` for `bytes` (inline when they fit).
    init(function: UInt32, bytes: some Collection<UInt8>) {
        var builder = Builder()
        Array(bytes).withUnsafeBytes { builder.append(contentsOf: $0) }
        self = builder.key(function: function)
    }

    /// Calls `body` with the argument bytes.
    @inlinable
    func withBytes<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
        if let spilled = self.spilled { return try spilled.withUnsafeBytes(body) }
        return try withUnsafeBytes(of: self.words) { try body(UnsafeRawBufferPointer(rebasing: $0.prefix(self.count))) }
    }

    @inlinable
    static func == (lhs: MemoryFastKey, rhs: MemoryFastKey) -> Bool {
        lhs.hash == rhs.hash && lhs.function == rhs.function && lhs.count == rhs.count && lhs.words == rhs.words
            && lhs.spilled == rhs.spilled
    }

    @inlinable
    func hash(into hasher: inout Hasher) {
        hasher.combine(self.hash)
    }

    /// The dictionaries of the fast index take the key's own hash, folded with their seed, instead
    /// of running `Hasher` over it: the hash is already keyed by a per-process secret.
    @inlinable
    func _rawHashValue(seed: Int) -> Int {
        Int(truncatingIfNeeded: Self.fold(self.hash ^ UInt64(UInt(bitPattern: seed)), Self.secret.7))
    }

    // MARK: Hashing

    /// The secret that keys every hash, from the system's random generator.
    @usableFromInline static let secret: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = {
        var generator = SystemRandomNumberGenerator()
        // Odd, so that no multiplier is zero.
        func next() -> UInt64 { generator.next() | 1 }
        return (next(), next(), next(), next(), next(), next(), next(), next())
    }()

    /// The two halves of the 128-bit product, folded together (the mixing step of wyhash).
    @inlinable
    static func fold(_ a: UInt64, _ b: UInt64) -> UInt64 {
        let product = a.multipliedFullWidth(by: b)
        return product.high ^ product.low
    }

    /// The hash of a key whose bytes do not fit inline, sixteen bytes at a time.
    @usableFromInline
    static func hash(header: UInt64, bytes: [UInt8]) -> UInt64 {
        let secret = Self.secret
        var state = header ^ secret.6
        bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset + 16 <= raw.count {
                let first = raw.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
                let second = raw.loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self)
                state = Self.fold(first ^ secret.0 ^ state, second ^ secret.1)
                offset += 16
            }
            var tail: (UInt64, UInt64) = (0, 0)
            withUnsafeMutableBytes(of: &tail) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[offset...])) }
            state = Self.fold(tail.0 ^ secret.2 ^ state, tail.1 ^ secret.3)
        }
        return Self.fold(state ^ secret.4, header ^ secret.7)
    }
}

extension MemoryFastKey {
    /// Collects the canonical bytes of a call's arguments, inline while they fit.
    @usableFromInline
    struct Builder: CanonicalByteSink {
        @usableFromInline var words: Words = (0, 0, 0, 0, 0, 0)
        @usableFromInline var count = 0
        @usableFromInline var spilled: [UInt8]? = nil

        @inlinable
        init() {}

        /// Appends the canonical bytes of `value` (see `CanonicalEncoder`).
        @inlinable
        mutating func append<T: Encodable>(_ value: T) throws {
            try CanonicalEncoder.append(value, to: &self)
        }

        @inlinable
        mutating func append(_ byte: UInt8) {
            let offset = self.count
            guard self.spilled == nil, offset < MemoryFastKey.inlineCapacity else {
                self.spill()
                self.spilled!.append(byte)
                self.count += 1
                return
            }
            withUnsafeMutableBytes(of: &self.words) { $0[offset] = byte }
            self.count = offset + 1
        }

        @inlinable
        mutating func append(contentsOf bytes: UnsafeRawBufferPointer) {
            let offset = self.count
            guard self.spilled == nil, offset + bytes.count <= MemoryFastKey.inlineCapacity else {
                self.spill()
                self.spilled!.append(contentsOf: bytes)
                self.count += bytes.count
                return
            }
            withUnsafeMutableBytes(of: &self.words) { words in
                UnsafeMutableRawBufferPointer(rebasing: words[offset..<(offset + bytes.count)]).copyMemory(from: bytes)
            }
            self.count = offset + bytes.count
        }

        /// Moves the inline bytes to an array, for bytes that will not fit.
        @usableFromInline
        mutating func spill() {
            guard self.spilled == nil else { return }
            var bytes: [UInt8] = []
            bytes.reserveCapacity(2 * MemoryFastKey.inlineCapacity + 16)
            withUnsafeBytes(of: self.words) { bytes.append(contentsOf: $0.prefix(self.count)) }
            self.words = (0, 0, 0, 0, 0, 0)
            self.spilled = bytes
        }

        /// The key of `function` for the bytes appended.
        @inlinable
        func key(function: UInt32) -> MemoryFastKey {
            MemoryFastKey(function: function, count: self.count, words: self.words, spilled: self.spilled)
        }
    }
}
