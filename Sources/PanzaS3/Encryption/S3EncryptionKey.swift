import Crypto
import Foundation

/// A key that encrypts the entries a cache uploads (AES-256-GCM), for buckets that others can read.
///
/// Keys are written `id:base64key` (32 bytes), comma-separated in `PANZA_S3_ENCRYPTION_KEYS`;
/// `panza keys generate --encryption` prints a new one. The first key encrypts, every key decrypts,
/// so keys rotate as signing keys do.
public struct S3EncryptionKey: Hashable, Sendable, CustomStringConvertible {
    /// The key's name inside each encrypted object: 1 to 64 bytes of `A-Z a-z 0-9 . _ -`.
    public let id: String
    let bytes: [UInt8]

    /// A key of 32 bytes.
    ///
    /// - Parameters:
    ///   - id: the key's name inside encrypted objects.
    ///   - bytes: 32 random bytes.
    /// - Throws: ``S3Error/Code/invalidConfiguration`` for a bad id or a key of another length.
    public init(id: String, bytes: [UInt8]) throws {
        try S3SigningKey.check(id: id)
        guard bytes.count == 32 else {
            throw S3Error(
                code: .invalidConfiguration,
                message: "encryption key '\(id)' has \(bytes.count) bytes; AES-256 needs 32")
        }
        self.id = id
        self.bytes = bytes
    }

    /// A new random key.
    ///
    /// - Parameter id: the key's name inside encrypted objects.
    /// - Throws: ``S3Error/Code/invalidConfiguration`` for a bad id.
    public static func generate(id: String) throws -> S3EncryptionKey {
        try S3EncryptionKey(id: id, bytes: SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) })
    }

    /// The key as `PANZA_S3_ENCRYPTION_KEYS` writes it (secret included).
    public var environmentValue: String { "\(self.id):\(Data(self.bytes).base64EncodedString())" }

    /// The id; never the key.
    public var description: String { "S3EncryptionKey(\(self.id))" }

    /// The environment variable read when ``S3Tier/Configuration/encryptionKeys`` is `nil`.
    public static let environmentVariable = "PANZA_S3_ENCRYPTION_KEYS"

    /// Parses comma-separated `id:base64key` items.
    ///
    /// - Parameter text: the keys; spaces around each are ignored.
    /// - Throws: ``S3Error/Code/invalidConfiguration`` naming the key that does not parse (never its bytes).
    public static func parse(_ text: String) throws -> [S3EncryptionKey] {
        let items = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        var keys: [S3EncryptionKey] = []
        for (position, item) in items.enumerated() {
            let parts = item.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            guard parts.count == 2, let data = Data(base64Encoded: parts[1]) else {
                throw S3Error(
                    code: .invalidConfiguration,
                    message: "encryption key \(position + 1) ('\(parts.first ?? "")') is not 'id:base64key'")
            }
            keys.append(try S3EncryptionKey(id: parts[0], bytes: Array(data)))
        }
        guard Set(keys.map(\.id)).count == keys.count else {
            throw S3Error(code: .invalidConfiguration, message: "two encryption keys have the same id")
        }
        return keys
    }
}
