/// A tier that can take a large envelope in pieces, so that what it uploads is never held whole:
/// the SQLite outbox hands it a large upload one chunk row at a time. `S3Tier` (PanzaS3) is one:
/// it sends the pieces as the parts of a multipart upload.
///
/// The cache calls ``store(key:byteCount:expiresAtMilliseconds:pieces:)`` for uploads of more than
/// one chunk, in order with the other operations (those before it are applied first); a tier that
/// does not adopt this protocol receives the envelope whole through ``CacheTier/apply(_:)``.
public protocol PieceWiseStoring: CacheTier {
    /// Stores the envelope that `pieces` yields under `key`, replacing any previous entry.
    ///
    /// - Parameters:
    ///   - key: the entry's key.
    ///   - byteCount: the envelope's length, the sum of the pieces' lengths.
    ///   - expiresAtMilliseconds: when the entry expires (milliseconds since 1970), `nil` for never.
    ///   - pieces: the envelope's bytes, in order; read each piece once, in order.
    /// - Throws: as ``CacheTier/apply(_:)``: the upload stays queued and is retried.
    func store(
        key: CacheKey,
        byteCount: Int,
        expiresAtMilliseconds: Int64?,
        pieces: BlobPieces
    ) async throws
}

/// The bytes of a large envelope, read one piece (at most 1 MiB) at a time from where it is kept.
public struct BlobPieces: Sendable {
    /// How many pieces there are.
    public let count: Int
    private let read: @Sendable (Int) async throws -> [UInt8]

    /// Pieces read by `read(index)` for each index in `0 ..< count`.
    public init(count: Int, read: @escaping @Sendable (Int) async throws -> [UInt8]) {
        self.count = count
        self.read = read
    }

    /// The piece at `index` (`0 ..< count`).
    public func piece(_ index: Int) async throws -> [UInt8] {
        precondition(index >= 0 && index < self.count, "piece \(index) of \(self.count)")
        return try await self.read(index)
    }

    /// Every piece joined: for a tier that needs the whole envelope.
    public func joined(byteCount: Int) async throws -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(byteCount)
        for index in 0..<self.count { bytes += try await self.piece(index) }
        return bytes
    }
}

/// A tier that can hand a stored envelope over in pieces as they arrive, so that a large value is
/// decoded as it streams in and never held whole in its stored form. `S3Tier` (PanzaS3) is one:
/// it feeds the ranges of its parallel ranged GET in order.
public protocol PieceWiseReading: CacheTier {
    /// Feeds the stored envelope of `key` to `sink`, in order, in pieces.
    ///
    /// - Parameters:
    ///   - key: the entry's key.
    ///   - sink: where the pieces go.
    /// - Returns: `false` (having fed nothing) when the tier does not hold `key`.
    /// - Throws: the tier's failure, or the sink's (the envelope failed verification): the cache
    ///   treats both as a miss.
    func readBlob(forKey key: CacheKey, into sink: BlobSink) async throws -> Bool
}

/// Where a ``PieceWiseReading`` tier puts the pieces of an envelope, in order.
public struct BlobSink: Sendable {
    private let consume: @Sendable (UnsafeRawBufferPointer) throws -> Void

    /// A sink that passes each piece to `consume`.
    public init(_ consume: @escaping @Sendable (UnsafeRawBufferPointer) throws -> Void) {
        self.consume = consume
    }

    /// Takes the next piece; it is copied or consumed before this returns.
    public func append(_ piece: UnsafeRawBufferPointer) throws {
        try self.consume(piece)
    }

    /// Takes the next piece.
    public func append(_ piece: [UInt8]) throws {
        try piece.withUnsafeBytes { try self.consume($0) }
    }
}
