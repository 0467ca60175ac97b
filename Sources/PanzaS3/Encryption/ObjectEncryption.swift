import Crypto
import Panza
import Synchronization

/// Encryption of the envelopes a cache keeps in its bucket: AES-256-GCM in segments, so that a
/// large value is encrypted and decrypted as it streams.
///
/// An encrypted object keeps the envelope's 48-byte header in clear (flag bit 0 set, so readers
/// that do not decrypt refuse it), then `[key id length: 1][key id][salt: 16][nonce prefix: 7]`,
/// then the rest of the envelope (frames and checksum) in segments of 1 MiB, each sealed on its
/// own with the object's key — HKDF-SHA256 of the configured key, the random salt and the
/// associated data below, so that no two objects share a key and random nonces never collide —
/// and the nonce `prefix ‖ segment index (4 bytes, big-endian) ‖ last (1 byte)`, and followed by
/// its 16-byte tag (the streaming AEAD construction of Tink and age). Every segment authenticates the framed associated data
/// `"panza-s3-encrypted-v1" ‖ bucket ‖ prefix ‖ object key ‖ header ‖ key id` (the header with
/// its signature fields taken as zero: a signature is added over the encrypted object and removed
/// before decryption). So segments cannot be reordered, dropped, cut short, moved to another
/// object, or read without the key.
struct ObjectEncryption: Sendable {
    let bucket: String
    let prefix: String
    /// The keys, the first of which encrypts; empty when objects are not encrypted.
    let keys: [S3EncryptionKey]
    /// Accept objects in clear although keys are set (a rollout).
    let acceptsPlain: Bool

    static let label = Array("panza-s3-encrypted-v1".utf8)
    static let segmentSize = 1 << 20
    static let tagSize = 16
    static let noncePrefixSize = 7
    static let saltSize = 16

    /// The key of one object: HKDF-SHA256 of the configured key, the object's salt and its
    /// associated data.
    static func objectKey(_ key: S3EncryptionKey, salt: [UInt8], associatedData: [UInt8]) -> SymmetricKey {
        HKDF<SHA256>.deriveKey(
            inputKeyMaterial: SymmetricKey(data: key.bytes), salt: salt, info: associatedData, outputByteCount: 32)
    }
    /// Bit 0 of the header's flags byte: the object is encrypted.
    static let encryptedFlag: UInt8 = 1

    /// The key that encrypts uploads; `nil` when they are not encrypted.
    var encryptionKey: S3EncryptionKey? { self.keys.first }

    /// The length of the encrypted object of an envelope of `length` bytes.
    static func encryptedLength(envelopeLength length: Int, key: S3EncryptionKey) -> Int {
        let body = length - BlobEnvelope.headerSize
        let segments = max(1, (body + self.segmentSize - 1) / self.segmentSize)
        return BlobEnvelope.headerSize + 1 + key.id.utf8.count + self.saltSize + self.noncePrefixSize + body
            + segments * self.tagSize
    }

    func associatedData(objectKey: String, header: [UInt8], keyID: String) -> [UInt8] {
        var header = header
        ObjectSignature.markUnsigned(&header)
        return ObjectSignature.framed([
            Self.label, Array(self.bucket.utf8), Array(self.prefix.utf8), Array(objectKey.utf8), header,
            Array(keyID.utf8),
        ])
    }

    static func nonce(prefix: [UInt8], index: Int, last: Bool) throws -> AES.GCM.Nonce {
        var bytes = prefix
        withUnsafeBytes(of: UInt32(truncatingIfNeeded: index).bigEndian) { bytes += $0 }
        bytes.append(last ? 1 : 0)
        return try AES.GCM.Nonce(data: bytes)
    }

    /// Encrypts a whole envelope. `header` is the object's header as it will be stored (the
    /// envelope's, flag set, signature fields as the signer will set them).
    func encrypted(_ envelope: [UInt8], objectKey: String) throws -> [UInt8] {
        guard let key = self.encryptionKey else { return envelope }
        let sealer = try Sealer(
            encryption: self, key: key, objectKey: objectKey, envelopeHeader: Array(envelope[0..<48]))
        var object = sealer.start()
        object += try sealer.feed(envelope[BlobEnvelope.headerSize...])
        object += try sealer.finish()
        return object
    }

    /// Decrypts a whole object (its signature already checked and removed) into its envelope.
    ///
    /// - Throws: ``PanzaError/Code/untrustedBlob`` when it is in clear and keys are required, or
    ///   encrypted with a key not configured, or does not authenticate.
    func decrypted(_ object: [UInt8], objectKey: String) throws -> [UInt8] {
        let opener = Opener(encryption: self, objectKey: objectKey)
        var envelope = try opener.feed(object[...])
        envelope += try opener.finish()
        return envelope
    }

    func refusal(_ reason: String, objectKey: String) -> PanzaError {
        PanzaError(code: .untrustedBlob, message: "object refused: \(reason)", key: objectKey)
    }

    /// Encrypts an envelope handed over in pieces: `start()`, then `feed` each piece after the
    /// header, then `finish()`.
    final class Sealer {
        private let key: SymmetricKey
        private let header: [UInt8]
        private let preamble: [UInt8]
        private let noncePrefix: [UInt8]
        private let associatedData: [UInt8]
        private var buffer: [UInt8] = []
        private var index = 0

        init(encryption: ObjectEncryption, key: S3EncryptionKey, objectKey: String, envelopeHeader: [UInt8]) throws {
            var header = envelopeHeader
            header[6] |= ObjectEncryption.encryptedFlag
            self.header = header
            var generator = SystemRandomNumberGenerator()
            let salt = (0..<ObjectEncryption.saltSize).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
            self.noncePrefix = (0..<ObjectEncryption.noncePrefixSize).map { _ in
                UInt8.random(in: .min ... .max, using: &generator)
            }
            self.preamble = [UInt8(key.id.utf8.count)] + Array(key.id.utf8) + salt + self.noncePrefix
            self.associatedData = encryption.associatedData(objectKey: objectKey, header: header, keyID: key.id)
            self.key = ObjectEncryption.objectKey(key, salt: salt, associatedData: self.associatedData)
        }

        /// The object's header and the preamble.
        func start() -> [UInt8] { self.header + self.preamble }

        /// Takes the next bytes of the envelope after its header; returns the segments completed.
        func feed(_ bytes: some Collection<UInt8>) throws -> [UInt8] {
            self.buffer += bytes
            var output: [UInt8] = []
            // A full segment is sealed only when more bytes follow it: the last one is marked last.
            while self.buffer.count > ObjectEncryption.segmentSize {
                output += try self.seal(Array(self.buffer[0..<ObjectEncryption.segmentSize]), last: false)
                self.buffer.removeFirst(ObjectEncryption.segmentSize)
            }
            return output
        }

        /// The last segment.
        func finish() throws -> [UInt8] {
            try self.seal(self.buffer, last: true)
        }

        private func seal(_ plaintext: [UInt8], last: Bool) throws -> [UInt8] {
            let nonce = try ObjectEncryption.nonce(prefix: self.noncePrefix, index: self.index, last: last)
            self.index += 1
            let box = try AES.GCM.seal(plaintext, using: self.key, nonce: nonce, authenticating: self.associatedData)
            return Array(box.ciphertext) + Array(box.tag)
        }
    }

    /// Decrypts an object handed over in pieces (its signature already removed): `feed` each piece,
    /// then `finish()`; what they return, joined, is the envelope. An object in clear passes through.
    final class Opener {
        private let encryption: ObjectEncryption
        private let objectKey: String
        private var header: [UInt8] = []
        private var preamble: [UInt8] = []
        private var preambleLength: Int?
        private var isEncrypted = false
        private var key: SymmetricKey?
        private var keyID = ""
        private var associatedData: [UInt8] = []
        private var buffer: [UInt8] = []
        private var index = 0

        init(encryption: ObjectEncryption, objectKey: String) {
            self.encryption = encryption
            self.objectKey = objectKey
        }

        /// Whether the rest of the object passes as it is (its header is in, and it is in clear).
        var passesThrough: Bool { self.header.count == BlobEnvelope.headerSize && !self.isEncrypted }

        func feed(_ bytes: ArraySlice<UInt8>) throws -> [UInt8] {
            var bytes = bytes
            var output: [UInt8] = []
            if self.header.count < BlobEnvelope.headerSize {
                let taken = bytes.prefix(BlobEnvelope.headerSize - self.header.count)
                self.header += taken
                bytes = bytes.dropFirst(taken.count)
                guard self.header.count == BlobEnvelope.headerSize else { return [] }
                self.isEncrypted = self.header[4] == 2 && self.header[6] & ObjectEncryption.encryptedFlag != 0
                if !self.isEncrypted {
                    guard self.encryption.keys.isEmpty || self.encryption.acceptsPlain else {
                        throw self.encryption.refusal("it is not encrypted", objectKey: self.objectKey)
                    }
                    return self.header + bytes
                }
                var clear = self.header
                clear[6] &= ~ObjectEncryption.encryptedFlag
                output += clear
            }
            guard self.isEncrypted else { return Array(bytes) }
            if self.preambleLength == nil || self.preamble.count < self.preambleLength! {
                if self.preamble.isEmpty, let first = bytes.first {
                    self.preambleLength = 1 + Int(first) + ObjectEncryption.saltSize + ObjectEncryption.noncePrefixSize
                }
                guard let length = self.preambleLength else { return output }
                let taken = bytes.prefix(length - self.preamble.count)
                self.preamble += taken
                bytes = bytes.dropFirst(taken.count)
                guard self.preamble.count == length else { return output }
                try self.startDecrypting()
            }
            self.buffer += bytes
            let sealed = ObjectEncryption.segmentSize + ObjectEncryption.tagSize
            while self.buffer.count > sealed {
                output += try self.open(Array(self.buffer[0..<sealed]), last: false)
                self.buffer.removeFirst(sealed)
            }
            return output
        }

        func finish() throws -> [UInt8] {
            guard self.header.count == BlobEnvelope.headerSize else {
                // Not an envelope: the cache's decoder refuses it; clear-text rules apply first.
                guard self.encryption.keys.isEmpty || self.encryption.acceptsPlain else {
                    throw self.encryption.refusal("it is not encrypted", objectKey: self.objectKey)
                }
                return self.header
            }
            guard self.isEncrypted else { return [] }
            guard self.key != nil, self.buffer.count >= ObjectEncryption.tagSize else {
                throw self.encryption.refusal("it ends inside its encryption", objectKey: self.objectKey)
            }
            return try self.open(self.buffer, last: true)
        }

        private func startDecrypting() throws {
            let idLength = Int(self.preamble[0])
            self.keyID = String(decoding: self.preamble[1..<(1 + idLength)], as: UTF8.self)
            guard let key = self.encryption.keys.first(where: { $0.id == self.keyID }) else {
                throw self.encryption.refusal(
                    "it is encrypted with key '\(self.keyID.prefix(64))', which is not configured",
                    objectKey: self.objectKey)
            }
            self.associatedData = self.encryption.associatedData(
                objectKey: self.objectKey, header: self.header, keyID: self.keyID)
            let salt = Array(self.preamble[(1 + idLength)..<(1 + idLength + ObjectEncryption.saltSize)])
            self.key = ObjectEncryption.objectKey(key, salt: salt, associatedData: self.associatedData)
        }

        private func open(_ sealed: [UInt8], last: Bool) throws -> [UInt8] {
            guard let key = self.key else {
                throw self.encryption.refusal("it ends inside its encryption", objectKey: self.objectKey)
            }
            let noncePrefix = Array(self.preamble[(self.preamble.count - ObjectEncryption.noncePrefixSize)...])
            let nonce = try ObjectEncryption.nonce(prefix: noncePrefix, index: self.index, last: last)
            self.index += 1
            do {
                let box = try AES.GCM.SealedBox(
                    nonce: nonce, ciphertext: sealed.dropLast(ObjectEncryption.tagSize),
                    tag: sealed.suffix(ObjectEncryption.tagSize))
                return Array(try AES.GCM.open(box, using: key, authenticating: self.associatedData))
            } catch {
                throw self.encryption.refusal(
                    "it does not decrypt (tampered with, cut short, or written for another key, bucket or prefix)",
                    objectKey: self.objectKey)
            }
        }
    }
}

/// The pieces of a large envelope as its encrypted object: the header and preamble first, then
/// the sealed segments as the pieces complete them (read once, in order).
final class EncryptingPieces: Sendable {
    private let sealer: Mutex<ObjectEncryption.Sealer?>
    private let original: BlobPieces
    private let makeSealer: @Sendable ([UInt8]) throws -> ObjectEncryption.Sealer

    init(original: BlobPieces, encryption: ObjectEncryption, key: S3EncryptionKey, objectKey: String) {
        self.original = original
        self.sealer = Mutex(nil)
        self.makeSealer = { header in
            try ObjectEncryption.Sealer(encryption: encryption, key: key, objectKey: objectKey, envelopeHeader: header)
        }
    }

    /// The encrypted object's pieces (as many as the envelope's).
    var pieces: BlobPieces {
        BlobPieces(count: self.original.count) { index in
            let piece = try await self.original.piece(index)
            return try self.sealer.withLock { sealer in
                var output: [UInt8] = []
                if index == 0 {
                    precondition(piece.count >= BlobEnvelope.headerSize, "the first piece holds the whole header")
                    let made = try self.makeSealer(Array(piece[0..<BlobEnvelope.headerSize]))
                    sealer = made
                    output = made.start()
                    output += try made.feed(piece[BlobEnvelope.headerSize...])
                } else if let sealer {
                    output = try sealer.feed(piece)
                }
                if index == self.original.count - 1, let sealer { output += try sealer.finish() }
                return output
            }
        }
    }
}

/// Decrypts a streamed object for the cache's decoder (after ``VerifyingSink`` removed its
/// signature); ``finish()`` hands over the last segment.
final class DecryptingSink: @unchecked Sendable {
    /// Touched by one reader at a time, in order (the sink's contract).
    private let opener: ObjectEncryption.Opener
    private let downstream: BlobSink

    init(encryption: ObjectEncryption, objectKey: String, downstream: BlobSink) {
        self.opener = ObjectEncryption.Opener(encryption: encryption, objectKey: objectKey)
        self.downstream = downstream
    }

    /// The sink to feed.
    var sink: BlobSink {
        BlobSink { [self] piece in
            // An object in clear goes on without a copy once its header has been looked at.
            if self.opener.passesThrough { return try self.downstream.append(piece) }
            let output = try self.opener.feed(ArraySlice(piece.bindMemory(to: UInt8.self)))
            if !output.isEmpty { try self.downstream.append(output) }
        }
    }

    /// Decrypts the last segment and hands it over.
    func finish() throws {
        let output = try self.opener.finish()
        if !output.isEmpty { try self.downstream.append(output) }
    }
}
