import Crypto
import Panza
import Synchronization

/// Stands between a streamed object and the cache's decoder: hands the decoder the unsigned
/// envelope, holds back the signature, and checks it once the object has arrived.
///
/// Nothing the decoder makes of the bytes is used before ``finish()`` returns: the cache's
/// decoder keeps the value to itself until the checksum at the end matches, and the tier calls
/// `finish()` before it reports the object found.
final class VerifyingSink: @unchecked Sendable {
    private let signature: ObjectSignature
    private let objectKey: String
    private let downstream: BlobSink
    /// Everything below is touched by one reader at a time, in order (the sink's contract).
    private var header: [UInt8] = []
    private var scheme: UInt8 = 0
    private var signatureLength = 0
    private var held: [UInt8] = []
    private var digest = SHA256()
    private var passedThrough = 0

    init(signature: ObjectSignature, objectKey: String, downstream: BlobSink) {
        self.signature = signature
        self.objectKey = objectKey
        self.downstream = downstream
    }

    /// The sink to give the client.
    var sink: BlobSink { BlobSink { [self] piece in try self.append(piece) } }

    private func append(_ piece: UnsafeRawBufferPointer) throws {
        var piece = piece
        if self.header.count < BlobEnvelope.headerSize {
            let taken = min(BlobEnvelope.headerSize - self.header.count, piece.count)
            self.header += piece[piece.startIndex..<(piece.startIndex + taken)]
            piece = UnsafeRawBufferPointer(rebasing: piece[(piece.startIndex + taken)...])
            guard self.header.count == BlobEnvelope.headerSize else { return }
            try self.startBody()
        }
        guard self.scheme != 0 else {
            self.passedThrough += piece.count
            try self.downstream.append(piece)
            return
        }
        // Everything but the last `signatureLength` bytes seen so far goes on.
        let total = self.held.count + piece.count
        let emitted = max(0, total - self.signatureLength)
        let fromHeld = min(emitted, self.held.count)
        if fromHeld > 0 {
            try self.emit(self.held[0..<fromHeld].withUnsafeBytes { Array($0) })
            self.held.removeFirst(fromHeld)
        }
        let fromPiece = emitted - fromHeld
        if fromPiece > 0 {
            try self.emit(UnsafeRawBufferPointer(rebasing: piece[piece.startIndex..<(piece.startIndex + fromPiece)]))
        }
        self.held += piece[(piece.startIndex + fromPiece)...]
    }

    private func emit(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try self.emit($0) }
    }

    private func emit(_ bytes: UnsafeRawBufferPointer) throws {
        self.digest.update(bufferPointer: bytes)
        self.passedThrough += bytes.count
        try self.downstream.append(bytes)
    }

    /// Reads the header's scheme: an unsigned object is refused here, before its body is read, when
    /// signatures are required.
    private func startBody() throws {
        if self.header[4] != 2 || self.header[7] == 0 {
            try self.signature.checkUnsigned(objectKey: self.objectKey)
            self.scheme = 0
            self.passedThrough += self.header.count
            try self.downstream.append(self.header)
            return
        }
        self.scheme = self.header[7]
        self.signatureLength = self.header.withUnsafeBytes {
            Int(UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: 44, as: UInt32.self)))
        }
        guard self.signatureLength >= 2, self.signatureLength <= ObjectSignature.maximumSignatureLength else {
            throw self.signature.refusal(
                "its signature length \(self.signatureLength) is impossible", objectKey: self.objectKey)
        }
        self.digest.update(data: self.header)
        var unsigned = self.header
        ObjectSignature.markUnsigned(&unsigned)
        self.passedThrough += unsigned.count
        try self.downstream.append(unsigned)
    }

    /// The creation time in the object's header; `nil` before the header has arrived.
    var createdAtMilliseconds: Int64? {
        guard self.header.count == BlobEnvelope.headerSize else { return nil }
        return self.header.withUnsafeBytes { Int64(littleEndian: $0.loadUnaligned(fromByteOffset: 16, as: Int64.self)) }
    }

    /// Checks the held-back signature once every byte has arrived.
    ///
    /// - Throws: ``PanzaError/Code/untrustedBlob`` when it does not verify.
    func finish() throws {
        guard self.header.count == BlobEnvelope.headerSize else {
            // Too short to be an envelope: unsigned rules apply, then the decoder refuses it.
            try self.signature.checkUnsigned(objectKey: self.objectKey)
            if !self.header.isEmpty { try self.downstream.append(self.header) }
            return
        }
        guard self.scheme != 0 else { return }
        guard self.held.count == self.signatureLength else {
            throw self.signature.refusal("it ends inside its signature", objectKey: self.objectKey)
        }
        try self.signature.check(
            signature: self.held, scheme: self.scheme, digest: self.digest.finalize(), objectKey: self.objectKey)
    }
}

/// The pieces of a large envelope as its signed object: the header marked, the signature appended
/// as one more piece, the digest taken as the pieces go by (they are read once, in order).
final class SigningPieces: Sendable {
    private let state: Mutex<SHA256>
    private let signature: ObjectSignature
    private let key: S3SigningKey
    private let objectKey: String
    private let original: BlobPieces

    init(original: BlobPieces, signature: ObjectSignature, key: S3SigningKey, objectKey: String) {
        self.original = original
        self.signature = signature
        self.key = key
        self.objectKey = objectKey
        self.state = Mutex(SHA256())
    }

    /// The signed object's length.
    func byteCount(unsigned: Int) -> Int { unsigned + ObjectSignature.signatureLength(of: self.key) }

    /// The signed object's pieces.
    var pieces: BlobPieces {
        BlobPieces(count: self.original.count + 1) { index in
            if index == self.original.count {
                let digest = self.state.withLock { $0.finalize() }
                return try self.signature.trailer(objectKey: self.objectKey, digest: digest, key: self.key)
            }
            var piece = try await self.original.piece(index)
            if index == 0 {
                precondition(piece.count >= BlobEnvelope.headerSize, "the first piece holds the whole header")
                ObjectSignature.markSigned(&piece, key: self.key)
            }
            self.state.withLock { $0.update(data: piece) }
            return piece
        }
    }
}
