internal import Crypto

/// The keys of memoized calls: `{id}/{hex SHA-256}` of the id and the canonical arguments.
///
/// The hash input is `"PNZK"`, the encoding version byte, the id as a canonical string, the
/// argument count, and each argument's canonical bytes (`CanonicalEncoder`). It depends on no
/// per-process hash seed, so it is the same in every process, on every machine, and in every
/// release that keeps ``encodingVersion``.
public enum MemoizeKey {
    /// The version of the canonical encoding. A release that changes it changes every key.
    public static let encodingVersion: UInt8 = 1

    /// The key of a call of memoized function `id` with `argument`s.
    ///
    /// Inlinable, so that the encoding of the arguments is specialized for their types in the
    /// caller: this is the hot path of every memoized call.
    @inlinable
    public static func make<each Argument: Encodable>(id: String, arguments argument: repeat each Argument) throws
        -> CacheKey
    {
        self.key(id: id, canonicalBytes: try self.canonicalBytes(id: id, arguments: repeat each argument))
    }

    /// The bytes the key hashes: ``canonicalPrefix(id:argumentCount:)``, then the canonical
    /// arguments.
    @inlinable
    static func canonicalBytes<each Argument: Encodable>(id: String, arguments argument: repeat each Argument) throws
        -> [UInt8]
    {
        var count = 0
        for _ in repeat each argument { count += 1 }
        var encoder = CanonicalEncoder()
        encoder.appendRaw(self.canonicalPrefix(id: id, argumentCount: count))
        for value in repeat each argument {
            try encoder.append(value)
        }
        return encoder.bytes
    }

    /// What the key hashes before the arguments: `"PNZK"`, the version, the id as a canonical
    /// string, and the argument count. The same for every call of a memoized function, so
    /// ``Memoized`` computes it once.
    @usableFromInline
    static func canonicalPrefix(id: String, argumentCount: Int) -> [UInt8] {
        var bytes: [UInt8] = [0x50, 0x4E, 0x5A, 0x4B, encodingVersion]
        CanonicalEncoder.writeString(id, to: &bytes)
        CanonicalEncoder.writeLength(argumentCount, to: &bytes)
        return bytes
    }

    /// The key of memoized function `id` for the bytes of ``canonicalBytes(id:arguments:)``.
    @usableFromInline
    static func key(id: String, canonicalBytes: [UInt8]) -> CacheKey {
        CacheKey(namespace: id, rawValue: keyString(id: id, digest: SHA256.hash(data: canonicalBytes)))
    }

    /// The key of memoized function `id` whose canonical prefix is `prefix` (see
    /// ``canonicalPrefix(id:argumentCount:)``), for the arguments whose bytes `arguments` holds:
    /// the same key as ``make(id:arguments:)``, from the bytes the memory tier's lookup built.
    @usableFromInline
    static func key(id: String, prefix: [UInt8], arguments: MemoryFastKey) -> CacheKey {
        var hash = SHA256()
        hash.update(data: prefix)
        arguments.withBytes { hash.update(bufferPointer: $0) }
        return CacheKey(namespace: id, rawValue: keyString(id: id, digest: hash.finalize()))
    }

    /// `{id}/{hex digest}`, built in one allocation.
    static func keyString(id: String, digest: SHA256.Digest) -> String {
        var id = id
        return id.withUTF8 { idBytes in
            String(unsafeUninitializedCapacity: idBytes.count + 1 + 2 * SHA256.byteCount) { buffer in
                _ = buffer.initialize(fromContentsOf: idBytes)
                let output = buffer.baseAddress!
                output[idBytes.count] = UInt8(ascii: "/")
                digest.withUnsafeBytes { raw in
                    Self.writeHex(raw, to: output + idBytes.count + 1)
                }
                return idBytes.count + 1 + 2 * SHA256.byteCount
            }
        }
    }

    /// Writes `bytes` as lowercase hex digits at `output`, two per byte.
    private static func writeHex(_ bytes: UnsafeRawBufferPointer, to output: UnsafeMutablePointer<UInt8>) {
        let digits: StaticString = "0123456789abcdef"
        let table = digits.utf8Start
        var index = 0
        for byte in bytes {
            output[index] = table[Int(byte &>> 4)]
            output[index &+ 1] = table[Int(byte & 0x0F)]
            index &+= 2
        }
    }

    /// The key of a call whose arguments a custom key function turned into `customKey` (Python
    /// panza's `hash_func`): `{id}/{hex SHA-256 of customKey's UTF-8}`, as Python panza stores it,
    /// so that a key function may return a whole prompt.
    @usableFromInline
    static func make(id: String, customKey: String) throws -> CacheKey {
        guard !customKey.isEmpty else {
            throw PanzaError(code: .invalidKey, message: "a custom key function returned an empty key", key: id)
        }
        return CacheKey(namespace: id, rawValue: keyString(id: id, digest: SHA256.hash(data: Array(customKey.utf8))))
    }

    /// The key of a call whose arguments a raw key function turned into `rawKey`, used as it is:
    /// `{id}/{rawKey}`, at most ``TieredCache/maximumKeyLength`` UTF-8 bytes in all (in S3 the raw
    /// part is percent-encoded into one path segment).
    @usableFromInline
    static func make(id: String, rawKey: String) throws -> CacheKey {
        guard !rawKey.isEmpty else {
            throw PanzaError(code: .invalidKey, message: "a raw key function returned an empty key", key: id)
        }
        return try TieredCache.validated(CacheKey(namespace: id, rawValue: id + "/" + rawKey))
    }
}
