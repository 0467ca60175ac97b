/// XXH64, the 64-bit xxHash checksum (seed 0), used to detect damaged blobs.
///
/// The algorithm follows the xxHash specification
/// (`doc/xxhash_spec.md` in the xxHash repository). liblz4 contains xxHash but does not export it,
/// and the packages Panza depends on offer only cryptographic hashes, which are several times
/// slower for a checksum that guards against accidents, not attackers.
enum XXHash64 {
    private static let prime1: UInt64 = 0x9E37_79B1_85EB_CA87
    private static let prime2: UInt64 = 0xC2B2_AE3D_27D4_EB4F
    private static let prime3: UInt64 = 0x1656_67B1_9E37_79F9
    private static let prime4: UInt64 = 0x85EB_CA77_C2B2_AE63
    private static let prime5: UInt64 = 0x27D4_EB2F_1656_67C5

    /// Returns the XXH64 digest of `bytes`.
    ///
    /// - Complexity: O(*n*), a few GB/s in release builds.
    static func hash(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = 0) -> UInt64 {
        self.hash(bytes, seed: seed, copying: 0..<0, to: nil)
    }

    /// Returns the XXH64 digest of `bytes` and copies `bytes[range]` to `destination` on the way:
    /// the 32-byte stripes inside `range` are stored as they are hashed, so those bytes are read
    /// from memory once (a payload stored raw in an envelope is verified and copied out in one pass).
    static func hash(
        _ bytes: UnsafeRawBufferPointer, seed: UInt64 = 0, copying range: Range<Int>,
        to destination: UnsafeMutableRawPointer?
    ) -> UInt64 {
        precondition(range.isEmpty || (destination != nil && range.lowerBound >= 0 && range.upperBound <= bytes.count))
        let count = bytes.count
        // Stripes start at multiples of 32; those in [storedFrom, storedTo) lie wholly in `range`.
        let stripesEnd = count / 32 * 32
        var storedFrom = 0
        var storedTo = 0
        if !range.isEmpty {
            storedFrom = min((range.lowerBound + 31) / 32 * 32, stripesEnd)
            storedTo = max(storedFrom, min(range.upperBound / 32 * 32, stripesEnd))
        }
        var hash: UInt64
        if count >= 32 {
            var v1 = seed &+ prime1 &+ prime2
            var v2 = seed &+ prime2
            var v3 = seed
            var v4 = seed &- prime1
            var offset = 0
            while offset < stripesEnd {
                let a = bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
                let b = bytes.loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self)
                let c = bytes.loadUnaligned(fromByteOffset: offset + 16, as: UInt64.self)
                let d = bytes.loadUnaligned(fromByteOffset: offset + 24, as: UInt64.self)
                if offset >= storedFrom, offset < storedTo, let destination {
                    let target = destination + (offset - range.lowerBound)
                    target.storeBytes(of: a, as: UInt64.self)
                    target.storeBytes(of: b, toByteOffset: 8, as: UInt64.self)
                    target.storeBytes(of: c, toByteOffset: 16, as: UInt64.self)
                    target.storeBytes(of: d, toByteOffset: 24, as: UInt64.self)
                }
                v1 = round(v1, UInt64(littleEndian: a))
                v2 = round(v2, UInt64(littleEndian: b))
                v3 = round(v3, UInt64(littleEndian: c))
                v4 = round(v4, UInt64(littleEndian: d))
                offset += 32
            }
            hash = rotateLeft(v1, 1) &+ rotateLeft(v2, 7) &+ rotateLeft(v3, 12) &+ rotateLeft(v4, 18)
            hash = mergeRound(hash, v1)
            hash = mergeRound(hash, v2)
            hash = mergeRound(hash, v3)
            hash = mergeRound(hash, v4)
        } else {
            hash = seed &+ prime5
        }
        if let destination, !range.isEmpty {
            // The bytes of `range` in no stored stripe: its edges, or all of it when it is short.
            @inline(__always) func copy(_ edge: Range<Int>) {
                guard !edge.isEmpty else { return }
                (destination + (edge.lowerBound - range.lowerBound)).copyMemory(
                    from: bytes.baseAddress! + edge.lowerBound, byteCount: edge.count)
            }
            if storedFrom < storedTo {
                copy(range.lowerBound..<storedFrom)
                copy(storedTo..<range.upperBound)
            } else {
                copy(range)
            }
        }
        hash &+= UInt64(count)
        return finish(hash, tail: UnsafeRawBufferPointer(rebasing: bytes[stripesEnd...]))
    }

    /// The last steps of XXH64: the fewer than 32 bytes after the last stripe, then the avalanche.
    @inline(__always)
    fileprivate static func finish(_ start: UInt64, tail bytes: UnsafeRawBufferPointer) -> UInt64 {
        var hash = start
        var offset = 0
        while offset + 8 <= bytes.count {
            hash ^= round(0, UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self)))
            hash = rotateLeft(hash, 27) &* prime1 &+ prime4
            offset += 8
        }
        if offset + 4 <= bytes.count {
            hash ^= UInt64(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self))) &* prime1
            hash = rotateLeft(hash, 23) &* prime2 &+ prime3
            offset += 4
        }
        while offset < bytes.count {
            hash ^= UInt64(bytes[offset]) &* prime5
            hash = rotateLeft(hash, 11) &* prime1
            offset += 1
        }
        hash ^= hash >> 33
        hash &*= prime2
        hash ^= hash >> 29
        hash &*= prime3
        hash ^= hash >> 32
        return hash
    }

    static func hash(_ bytes: some Sequence<UInt8>) -> UInt64 {
        if let hash = bytes.withContiguousStorageIfAvailable({ hash(UnsafeRawBufferPointer($0)) }) { return hash }
        return Array(bytes).withUnsafeBytes { hash($0) }
    }

    /// XXH64 of bytes that arrive in pieces: ``update(_:)`` with each, in order, then ``finalize()``.
    /// The digest equals ``hash(_:seed:)-(UnsafeRawBufferPointer,_)`` of the pieces joined.
    struct Streaming {
        private var v1 = prime1 &+ prime2
        private var v2 = prime2
        private var v3: UInt64 = 0
        private var v4: UInt64 = 0 &- prime1
        private var total = 0
        /// Bytes of an unfinished 32-byte stripe.
        private var pending = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        private var pendingCount = 0

        init() {}

        mutating func update(_ bytes: UnsafeRawBufferPointer) {
            self.total += bytes.count
            var offset = 0
            if self.pendingCount > 0 {
                let take = min(32 - self.pendingCount, bytes.count)
                withUnsafeMutableBytes(of: &self.pending) { stripe in
                    UnsafeMutableRawBufferPointer(rebasing: stripe[self.pendingCount..<(self.pendingCount + take)])
                        .copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[0..<take]))
                }
                self.pendingCount += take
                offset = take
                guard self.pendingCount == 32 else { return }
                let stripe = self.pending
                self.consume(
                    UInt64(littleEndian: stripe.0), UInt64(littleEndian: stripe.1), UInt64(littleEndian: stripe.2),
                    UInt64(littleEndian: stripe.3))
                self.pendingCount = 0
            }
            while offset + 32 <= bytes.count {
                self.consume(
                    UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self)),
                    UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self)),
                    UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: offset + 16, as: UInt64.self)),
                    UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: offset + 24, as: UInt64.self)))
                offset += 32
            }
            if offset < bytes.count {
                let rest = bytes.count - offset
                withUnsafeMutableBytes(of: &self.pending) { stripe in
                    UnsafeMutableRawBufferPointer(rebasing: stripe[0..<rest])
                        .copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[offset...]))
                }
                self.pendingCount = rest
            }
        }

        @inline(__always)
        private mutating func consume(_ a: UInt64, _ b: UInt64, _ c: UInt64, _ d: UInt64) {
            self.v1 = XXHash64.round(self.v1, a)
            self.v2 = XXHash64.round(self.v2, b)
            self.v3 = XXHash64.round(self.v3, c)
            self.v4 = XXHash64.round(self.v4, d)
        }

        func finalize() -> UInt64 {
            var hash: UInt64
            if self.total >= 32 {
                hash =
                    rotateLeft(self.v1, 1) &+ rotateLeft(self.v2, 7) &+ rotateLeft(self.v3, 12)
                    &+ rotateLeft(self.v4, 18)
                hash = mergeRound(hash, self.v1)
                hash = mergeRound(hash, self.v2)
                hash = mergeRound(hash, self.v3)
                hash = mergeRound(hash, self.v4)
            } else {
                hash = prime5
            }
            hash &+= UInt64(self.total)
            var stripe = self.pending
            let count = self.pendingCount
            return withUnsafeBytes(of: &stripe) {
                XXHash64.finish(hash, tail: UnsafeRawBufferPointer(rebasing: $0[0..<count]))
            }
        }
    }

    @inline(__always)
    fileprivate static func rotateLeft(_ value: UInt64, _ count: UInt64) -> UInt64 {
        (value << count) | (value >> (64 - count))
    }

    @inline(__always)
    fileprivate static func round(_ accumulator: UInt64, _ input: UInt64) -> UInt64 {
        rotateLeft(accumulator &+ input &* prime2, 31) &* prime1
    }

    @inline(__always)
    fileprivate static func mergeRound(_ accumulator: UInt64, _ value: UInt64) -> UInt64 {
        (accumulator ^ round(0, value)) &* prime1 &+ prime4
    }
}
