import Crypto
import Panza
import Synchronization

/// Signatures of the envelopes a cache keeps in its bucket, bound to the object's place.
///
/// A signed object is the envelope with its signature scheme byte (offset 7) and signature
/// length (offset 44) set and the signature appended after the checksum (the checksum is that of
/// the unsigned envelope: those five bytes taken as zero). The signature is
/// `[key id length: 1][key id][tag]`; the tag is computed over a framed message:
///
/// ```
/// "panza-s3-object-v1" ‖ bucket ‖ prefix ‖ object key ‖ SHA-256(object before the signature)
/// ```
///
/// each part preceded by its length (4 bytes, big-endian): HMAC-SHA256 with the key's secret
/// (scheme 1) or an Ed25519 signature (scheme 2). So a signed object is refused under another key,
/// in another bucket or prefix, with another header or payload, or by a reader that expects another
/// algorithm: the reader's configuration, never the object, decides which schemes are accepted.
struct ObjectSignature: Sendable {
    /// Where the objects live; part of every signed message.
    let bucket: String
    let prefix: String
    /// The keys, the first of which signs; empty when the bucket is trusted as it is.
    let keys: [S3SigningKey]
    /// Accept unsigned objects although keys are set (a rollout of signing).
    let acceptsUnsigned: Bool

    static let label = Array("panza-s3-object-v1".utf8)
    /// The bytes of a signature of `key`: its id, framed, and the tag.
    static func signatureLength(of key: S3SigningKey) -> Int {
        1 + key.id.utf8.count + self.tagLength(of: key.algorithm)
    }
    static func tagLength(of algorithm: S3SigningKey.Algorithm) -> Int { algorithm == .ed25519 ? 64 : 32 }
    static func scheme(of algorithm: S3SigningKey.Algorithm) -> UInt8 { algorithm == .ed25519 ? 2 : 1 }
    /// The longest signature accepted: a 255-byte id and an Ed25519 tag.
    static let maximumSignatureLength = 1 + 255 + 64

    /// The key that signs uploads; `nil` when uploads are not signed.
    var signingKey: S3SigningKey? { self.keys.first }

    /// The message a tag covers.
    func message(objectKey: String, digest: SHA256.Digest) -> [UInt8] {
        Self.framed([
            Self.label, Array(self.bucket.utf8), Array(self.prefix.utf8), Array(objectKey.utf8), Array(digest),
        ])
    }

    /// `parts` joined, each preceded by its length (4 bytes, big-endian): what signatures and
    /// encryption authenticate, so that no two different lists of parts give the same bytes.
    static func framed(_ parts: [[UInt8]]) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(parts.reduce(0) { $0 + 4 + $1.count })
        for part in parts {
            withUnsafeBytes(of: UInt32(part.count).bigEndian) { bytes += $0 }
            bytes += part
        }
        return bytes
    }

    /// The signature trailer for an object whose bytes before it hash to `digest`.
    func trailer(objectKey: String, digest: SHA256.Digest, key: S3SigningKey) throws -> [UInt8] {
        let message = self.message(objectKey: objectKey, digest: digest)
        var trailer = [UInt8(key.id.utf8.count)] + Array(key.id.utf8)
        switch key.algorithm {
        case .hmacSHA256:
            trailer += Array(HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: key.secret ?? [])))
        case .ed25519:
            let privateKey = try Curve25519.Signing.PrivateKey(rawRepresentation: key.secret ?? [])
            trailer += Array(try privateKey.signature(for: message))
        }
        return trailer
    }

    /// Sets the scheme byte and signature length in a header (48 bytes or more).
    static func markSigned(_ header: inout [UInt8], key: S3SigningKey) {
        header[7] = self.scheme(of: key.algorithm)
        withUnsafeBytes(of: UInt32(self.signatureLength(of: key)).littleEndian) { bytes in
            for index in 0..<4 { header[44 + index] = bytes[index] }
        }
    }

    /// The signed object of an unsigned version 2 envelope, or the envelope as it is when uploads
    /// are not signed.
    func signed(_ envelope: [UInt8], objectKey: String) throws -> [UInt8] {
        guard let key = self.signingKey, key.canSign else { return envelope }
        var object = envelope
        Self.markSigned(&object, key: key)
        object += try self.trailer(objectKey: objectKey, digest: SHA256.hash(data: object), key: key)
        return object
    }

    /// Verifies a whole object and returns the unsigned envelope it holds.
    ///
    /// The signature is checked (in constant time) before anything else of the object is
    /// trusted: no length but the signature's own is read, nothing is decompressed.
    ///
    /// - Throws: ``PanzaError/Code/untrustedBlob`` when keys are set and the object is unsigned
    ///   (unless ``acceptsUnsigned``), signed with a key or algorithm not configured, or its
    ///   signature does not match.
    func verified(_ object: [UInt8], objectKey: String) throws -> [UInt8] {
        guard object.count >= BlobEnvelope.headerSize + BlobEnvelope.trailerSize, object[4] == 2 else {
            // Version 1 (or not an envelope at all): never signed.
            try self.checkUnsigned(objectKey: objectKey)
            return object
        }
        let scheme = object[7]
        guard scheme != 0 else {
            try self.checkUnsigned(objectKey: objectKey)
            return object
        }
        let signatureLength = object.withUnsafeBytes {
            Int(UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: 44, as: UInt32.self)))
        }
        guard signatureLength >= 2, signatureLength <= Self.maximumSignatureLength,
            signatureLength <= object.count - BlobEnvelope.headerSize - BlobEnvelope.trailerSize
        else {
            throw self.refusal("its signature length \(signatureLength) is impossible", objectKey: objectKey)
        }
        let body = object.count - signatureLength
        var digest = SHA256()
        digest.update(data: object[0..<body])
        try self.check(
            signature: Array(object[body...]), scheme: scheme, digest: digest.finalize(), objectKey: objectKey)
        var envelope = Array(object[0..<body])
        Self.markUnsigned(&envelope)
        return envelope
    }

    /// Zeroes the scheme byte and signature length: the envelope as local tiers keep it.
    static func markUnsigned(_ header: inout [UInt8]) {
        header[7] = 0
        for index in 44..<48 { header[index] = 0 }
    }

    /// Checks a signature trailer against the digest of the bytes before it.
    func check(signature: [UInt8], scheme: UInt8, digest: SHA256.Digest, objectKey: String) throws {
        // No keys: the bucket is trusted as it is; a signed object is read like an unsigned one.
        guard !self.keys.isEmpty else { return }
        let idLength = Int(signature[0])
        guard
            let algorithm = [S3SigningKey.Algorithm.hmacSHA256, .ed25519].first(where: { Self.scheme(of: $0) == scheme }
            ),
            signature.count == 1 + idLength + Self.tagLength(of: algorithm)
        else {
            throw self.refusal("it is signed with an unknown scheme \(scheme)", objectKey: objectKey)
        }
        let id = String(decoding: signature[1..<(1 + idLength)], as: UTF8.self)
        guard let key = self.keys.first(where: { $0.id == id && $0.algorithm == algorithm }) else {
            throw self.refusal(
                "it is signed with key '\(id.prefix(64))', which is not configured", objectKey: objectKey)
        }
        let tag = signature[(1 + idLength)...]
        let message = self.message(objectKey: objectKey, digest: digest)
        let valid: Bool
        switch algorithm {
        case .hmacSHA256:
            valid = HMAC<SHA256>.isValidAuthenticationCode(
                tag, authenticating: message, using: SymmetricKey(data: key.secret ?? []))
        case .ed25519:
            valid =
                (try? Curve25519.Signing.PublicKey(rawRepresentation: key.publicKey ?? []))?
                .isValidSignature(tag, for: message) ?? false
        }
        guard valid else {
            throw self.refusal(
                "its signature does not match (tampered with, or written for another key, bucket or prefix)",
                objectKey: objectKey)
        }
    }

    func checkUnsigned(objectKey: String) throws {
        guard self.keys.isEmpty || self.acceptsUnsigned else {
            throw self.refusal("it is not signed", objectKey: objectKey)
        }
    }

    func refusal(_ reason: String, objectKey: String) -> PanzaError {
        PanzaError(code: .untrustedBlob, message: "object refused: \(reason)", key: objectKey)
    }
}
