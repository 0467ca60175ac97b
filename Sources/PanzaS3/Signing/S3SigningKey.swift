import Crypto
import Foundation

/// A key that signs the objects a cache uploads to its bucket, or verifies those it reads.
///
/// Two kinds:
/// - **HMAC-SHA256** (a shared secret of at least 32 bytes): every machine that holds it can both
///   write and read the bucket's entries.
/// - **Ed25519**: the machines that write (CI) hold the private key; the others hold only the
///   public key and can verify, never sign, so that a developer's laptop cannot poison what CI
///   serves (as Nix binary caches trust public keys).
///
/// Keys are written `id:base64secret`, `id:ed25519:base64privatekey` or
/// `id:ed25519-public:base64publickey`, comma-separated in `PANZA_S3_SIGNING_KEYS`; `panza keys
/// generate [--ed25519]` prints new ones. The id names the key inside each signature, so that a
/// reader picks the right key while keys rotate.
public struct S3SigningKey: Hashable, Sendable, CustomStringConvertible {
    /// What the key computes.
    public enum Algorithm: String, Hashable, Sendable {
        /// HMAC-SHA256 with a shared secret: signs and verifies.
        case hmacSHA256 = "hmac-sha256"
        /// Ed25519: signs with a private key, verifies with its public key.
        case ed25519 = "ed25519"
    }

    /// The key's name inside signatures: 1 to 64 bytes of `A-Z a-z 0-9 . _ -`.
    public let id: String
    /// What the key computes.
    public let algorithm: Algorithm
    /// The HMAC secret, or the Ed25519 private key; `nil` for a verify-only Ed25519 key.
    let secret: [UInt8]?
    /// The Ed25519 public key.
    let publicKey: [UInt8]?

    /// An HMAC-SHA256 key.
    ///
    /// - Parameters:
    ///   - id: the key's name inside signatures (1 to 64 bytes of `A-Z a-z 0-9 . _ -`).
    ///   - secret: at least 32 random bytes.
    /// - Throws: ``S3Error/Code/invalidConfiguration`` for a bad id or a short secret.
    public init(id: String, secret: [UInt8]) throws {
        try Self.check(id: id)
        guard secret.count >= 32 else {
            throw S3Error(
                code: .invalidConfiguration,
                message: "the secret of signing key '\(id)' has \(secret.count) bytes; at least 32 are needed")
        }
        self.id = id
        self.algorithm = .hmacSHA256
        self.secret = secret
        self.publicKey = nil
    }

    /// An Ed25519 key that signs (and verifies).
    ///
    /// - Parameters:
    ///   - id: the key's name inside signatures.
    ///   - privateKey: the 32-byte Ed25519 private key (its seed).
    /// - Throws: ``S3Error/Code/invalidConfiguration`` for a bad id or key.
    public static func ed25519(id: String, privateKey: [UInt8]) throws -> S3SigningKey {
        try self.check(id: id)
        do {
            let key = try Curve25519.Signing.PrivateKey(rawRepresentation: privateKey)
            return S3SigningKey(
                id: id, algorithm: .ed25519, secret: privateKey, publicKey: Array(key.publicKey.rawRepresentation))
        } catch {
            throw S3Error(code: .invalidConfiguration, message: "signing key '\(id)' is not an Ed25519 private key")
        }
    }

    /// An Ed25519 key that only verifies.
    ///
    /// - Parameters:
    ///   - id: the key's name inside signatures.
    ///   - publicKey: the 32-byte Ed25519 public key.
    /// - Throws: ``S3Error/Code/invalidConfiguration`` for a bad id or key.
    public static func ed25519(id: String, publicKey: [UInt8]) throws -> S3SigningKey {
        try self.check(id: id)
        guard (try? Curve25519.Signing.PublicKey(rawRepresentation: publicKey)) != nil else {
            throw S3Error(code: .invalidConfiguration, message: "signing key '\(id)' is not an Ed25519 public key")
        }
        return S3SigningKey(id: id, algorithm: .ed25519, secret: nil, publicKey: publicKey)
    }

    private init(id: String, algorithm: Algorithm, secret: [UInt8]?, publicKey: [UInt8]?) {
        self.id = id
        self.algorithm = algorithm
        self.secret = secret
        self.publicKey = publicKey
    }

    /// A new random key: 32 random bytes of secret, or a new Ed25519 key pair.
    ///
    /// - Parameters:
    ///   - id: the key's name inside signatures.
    ///   - algorithm: HMAC-SHA256 (the default) or Ed25519.
    /// - Throws: ``S3Error/Code/invalidConfiguration`` for a bad id.
    public static func generate(id: String, algorithm: Algorithm = .hmacSHA256) throws -> S3SigningKey {
        switch algorithm {
        case .hmacSHA256:
            let secret = SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }
            return try S3SigningKey(id: id, secret: secret)
        case .ed25519:
            return try .ed25519(id: id, privateKey: Array(Curve25519.Signing.PrivateKey().rawRepresentation))
        }
    }

    /// Whether the key can sign (an Ed25519 public key only verifies).
    public var canSign: Bool { self.secret != nil }

    /// This key only verifying: for an Ed25519 key, its public half; an HMAC key is returned as is
    /// (its secret both signs and verifies).
    public var verifyingOnly: S3SigningKey {
        guard self.algorithm == .ed25519, let publicKey else { return self }
        return S3SigningKey(id: self.id, algorithm: .ed25519, secret: nil, publicKey: publicKey)
    }

    /// The key as `PANZA_S3_SIGNING_KEYS` writes it (secret included).
    public var environmentValue: String {
        switch (self.algorithm, self.secret) {
        case (.hmacSHA256, let secret?): "\(self.id):\(Data(secret).base64EncodedString())"
        case (.ed25519, let secret?): "\(self.id):ed25519:\(Data(secret).base64EncodedString())"
        default: "\(self.id):ed25519-public:\(Data(self.publicKey ?? []).base64EncodedString())"
        }
    }

    /// The id and algorithm; never the secret.
    public var description: String {
        "S3SigningKey(\(self.id), \(self.algorithm.rawValue)\(self.canSign ? "" : ", verify only"))"
    }

    /// The environment variable read when ``S3Tier/Configuration/signingKeys`` is `nil`.
    public static let environmentVariable = "PANZA_S3_SIGNING_KEYS"

    /// Parses keys written as `PANZA_S3_SIGNING_KEYS` writes them: comma-separated
    /// `id:base64secret`, `id:ed25519:base64privatekey` or `id:ed25519-public:base64publickey`.
    ///
    /// - Parameter text: the keys; spaces around each are ignored.
    /// - Throws: ``S3Error/Code/invalidConfiguration`` naming the key that does not parse (never its secret).
    public static func parse(_ text: String) throws -> [S3SigningKey] {
        let items = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        var keys: [S3SigningKey] = []
        for (position, item) in items.enumerated() {
            let parts = item.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            let id = parts.first ?? ""
            func bytes(_ base64: String) throws -> [UInt8] {
                guard let data = Data(base64Encoded: base64) else {
                    throw S3Error(
                        code: .invalidConfiguration,
                        message: "signing key \(position + 1) ('\(id)') is not valid base64")
                }
                return Array(data)
            }
            switch parts.count {
            case 2:
                keys.append(try S3SigningKey(id: id, secret: try bytes(parts[1])))
            case 3 where parts[1] == "ed25519":
                keys.append(try .ed25519(id: id, privateKey: try bytes(parts[2])))
            case 3 where parts[1] == "ed25519-public":
                keys.append(try .ed25519(id: id, publicKey: try bytes(parts[2])))
            default:
                throw S3Error(
                    code: .invalidConfiguration,
                    message: "signing key \(position + 1) ('\(id)') is not 'id:base64secret', "
                        + "'id:ed25519:base64key' or 'id:ed25519-public:base64key'")
            }
        }
        guard Set(keys.map(\.id)).count == keys.count else {
            throw S3Error(code: .invalidConfiguration, message: "two signing keys have the same id")
        }
        return keys
    }

    static func check(id: String) throws {
        let bytes = Array(id.utf8)
        let allowed = { (byte: UInt8) in
            URIEncoding.isUnreserved(byte) && byte != UInt8(ascii: "~")
        }
        guard (1...64).contains(bytes.count), bytes.allSatisfy(allowed) else {
            throw S3Error(
                code: .invalidConfiguration,
                message: "a signing key id must be 1 to 64 characters of A-Z a-z 0-9 . _ -, not '\(id.prefix(80))'")
        }
    }
}
