/// The self-describing, checksummed container around every value Panza stores below memory.
///
/// The same bytes are written to SQLite and to remote tiers, so any tier can serve any other.
/// The layout (all integers little-endian) is documented in `docs/blob-format.md`:
///
/// | offset | size | field |
/// |-------:|-----:|-------|
/// | 0 | 4 | magic `PNZA` |
/// | 4 | 1 | format version (1) |
/// | 5 | 1 | codec: 0 none, 1 LZ4 block |
/// | 6 | 1 | content type: 0 bytes, 1 UTF-8 text, 2 JSON, 3 null (a `nil`) |
/// | 7 | 1 | flags, reserved (0) |
/// | 8 | 4 | stored payload length |
/// | 12 | 4 | original payload length (before compression) |
/// | 16 | 8 | creation time, milliseconds since 1970 |
/// | 24 | 8 | time to live in milliseconds, 0 for none |
/// | 32 | n | payload |
/// | 32 + n | 8 | XXH64 (seed 0) of bytes 0 ..< 32 + n |
public struct BlobEnvelope: Hashable, Sendable {
    /// How the payload is stored.
    public enum Codec: UInt8, Hashable, Sendable, CustomStringConvertible {
        /// Stored as is (compression would not have made it smaller).
        case none = 0
        /// An LZ4 block (liblz4 `LZ4_compress_default`).
        case lz4 = 1

        /// The name used in `panza get` and logs.
        public var description: String { self == .none ? "none" : "lz4" }
    }

    /// What the payload bytes mean.
    public enum ContentType: UInt8, Hashable, Sendable, CustomStringConvertible {
        /// Raw bytes (`Data` or `[UInt8]` values).
        case bytes = 0
        /// UTF-8 text (`String` values).
        case text = 1
        /// JSON produced by `JSONEncoder` (every other `Codable` value).
        case json = 2
        /// A `nil` result; the payload is one byte, the number of Optional layers around the `nil`
        /// in the declared type (0 for `T?.none`, 1 for `T??.some(.none)`).
        case null = 3

        /// The name used in `panza get` and logs.
        public var description: String {
            switch self {
            case .bytes: "bytes"
            case .text: "text"
            case .json: "json"
            case .null: "null"
            }
        }
    }

    /// The four bytes every envelope starts with: `PNZA`.
    public static let magic: [UInt8] = [0x50, 0x4E, 0x5A, 0x41]
    /// The format version this release writes and the newest it reads.
    public static let formatVersion: UInt8 = 1
    /// Bytes before the payload.
    public static let headerSize = 32
    /// Bytes after the payload (the checksum).
    public static let trailerSize = 8
    /// Payloads shorter than this are never compressed: LZ4 cannot win on them.
    static let minimumCompressibleSize = 64

    /// What the payload means.
    public var contentType: ContentType
    /// The uncompressed payload.
    public var payload: [UInt8]
    /// When the value was stored, in milliseconds since 1970-01-01 UTC.
    public var createdAtMilliseconds: Int64
    /// How long the value lives, in milliseconds; `0` means forever.
    public var timeToLiveMilliseconds: Int64
    /// The codec the envelope was decoded from (``Codec/none`` for envelopes built in memory).
    public private(set) var storedCodec: Codec = .none

    /// An envelope of `payload`, meaning `contentType`, written at `createdAtMilliseconds`, to live `timeToLiveMilliseconds` (0 for ever).
    public init(
        contentType: ContentType,
        payload: [UInt8],
        createdAtMilliseconds: Int64,
        timeToLiveMilliseconds: Int64 = 0
    ) {
        self.contentType = contentType
        self.payload = payload
        self.createdAtMilliseconds = createdAtMilliseconds
        self.timeToLiveMilliseconds = max(0, timeToLiveMilliseconds)
    }

    /// When the value expires, in milliseconds since 1970, or `nil` when it never does.
    public var expiresAtMilliseconds: Int64? {
        self.timeToLiveMilliseconds > 0 ? self.createdAtMilliseconds &+ self.timeToLiveMilliseconds : nil
    }

    /// Whether the value has expired at `nowMilliseconds`.
    public func isExpired(atMilliseconds nowMilliseconds: Int64) -> Bool {
        guard let expiresAt = self.expiresAtMilliseconds else { return false }
        return nowMilliseconds >= expiresAt
    }

    /// Serializes the envelope, LZ4-compressing the payload when that makes it smaller.
    ///
    /// - Parameter compress: pass `false` to store the payload as is.
    public func encoded(compress: Bool = true) -> [UInt8] {
        let compressed: [UInt8]? =
            compress && self.payload.count >= Self.minimumCompressibleSize
            ? self.payload.withUnsafeBytes { LZ4.compress($0) } : nil
        let codec: Codec = compressed == nil ? .none : .lz4
        let stored = compressed ?? self.payload
        let total = Self.headerSize + stored.count + Self.trailerSize
        return [UInt8](unsafeUninitializedCapacity: total) { buffer, initialized in
            let raw = UnsafeMutableRawBufferPointer(buffer)
            raw.copyBytes(from: Self.magic)
            raw[4] = Self.formatVersion
            raw[5] = codec.rawValue
            raw[6] = self.contentType.rawValue
            raw[7] = 0
            raw.storeBytes(of: UInt32(stored.count).littleEndian, toByteOffset: 8, as: UInt32.self)
            raw.storeBytes(of: UInt32(self.payload.count).littleEndian, toByteOffset: 12, as: UInt32.self)
            raw.storeBytes(of: self.createdAtMilliseconds.littleEndian, toByteOffset: 16, as: Int64.self)
            raw.storeBytes(of: self.timeToLiveMilliseconds.littleEndian, toByteOffset: 24, as: Int64.self)
            stored.withUnsafeBytes { source in
                UnsafeMutableRawBufferPointer(rebasing: raw[Self.headerSize..<(Self.headerSize + stored.count)])
                    .copyMemory(from: source)
            }
            let checksum = XXHash64.hash(UnsafeRawBufferPointer(rebasing: raw[0..<(Self.headerSize + stored.count)]))
            raw.storeBytes(of: checksum.littleEndian, toByteOffset: Self.headerSize + stored.count, as: UInt64.self)
            initialized = total
        }
    }

    /// Parses and verifies envelope bytes.
    ///
    /// The checksum is verified before anything else is trusted, then the payload is decompressed
    /// and its length checked against the header.
    ///
    /// - Parameters:
    ///   - bytes: the envelope, as a tier stored it.
    ///   - maxPayloadBytes: the largest payload accepted; a header that claims more is refused
    ///     before anything is allocated (bytes from a shared bucket are not trusted).
    /// - Throws: ``PanzaError/Code/corruptBlob`` when the bytes are damaged,
    ///   ``PanzaError/Code/unsupportedFormat`` when they were written by a newer format version,
    ///   ``PanzaError/Code/valueTooLarge`` when the payload would exceed `maxPayloadBytes`.
    public static func decode(_ bytes: [UInt8], maxPayloadBytes: Int = .max) throws -> BlobEnvelope {
        try bytes.withUnsafeBytes { try decode($0, maxPayloadBytes: maxPayloadBytes) }
    }

    /// Parses and verifies envelope bytes. See ``decode(_:maxPayloadBytes:)-(Array<UInt8>,_)``.
    package static func decode(_ raw: UnsafeRawBufferPointer, maxPayloadBytes: Int = .max) throws -> BlobEnvelope {
        let header = try Header(raw)
        guard header.originalLength <= maxPayloadBytes else {
            throw PanzaError(
                code: .valueTooLarge,
                message: "the envelope holds \(header.originalLength) bytes, more than the \(maxPayloadBytes) accepted"
            )
        }
        let end = headerSize + header.storedLength
        let expected = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: end, as: UInt64.self))
        let actual = XXHash64.hash(UnsafeRawBufferPointer(rebasing: raw[0..<end]))
        guard expected == actual else {
            throw PanzaError(code: .corruptBlob, message: "blob checksum mismatch")
        }
        let stored = UnsafeRawBufferPointer(rebasing: raw[headerSize..<end])
        let payload: [UInt8]
        switch header.codec {
        case .none:
            guard header.storedLength == header.originalLength else {
                throw PanzaError(code: .corruptBlob, message: "uncompressed blob has inconsistent lengths")
            }
            payload = Array(stored)
        case .lz4:
            guard let decompressed = LZ4.decompress(stored, originalSize: header.originalLength) else {
                throw PanzaError(code: .corruptBlob, message: "LZ4 payload does not decompress to its stated length")
            }
            payload = decompressed
        }
        var envelope = BlobEnvelope(
            contentType: header.contentType,
            payload: payload,
            createdAtMilliseconds: header.createdAtMilliseconds,
            timeToLiveMilliseconds: header.timeToLiveMilliseconds
        )
        envelope.storedCodec = header.codec
        return envelope
    }

    /// The fixed-size header, parsed without touching the payload.
    public struct Header: Hashable, Sendable {
        /// How the payload is stored.
        public var codec: Codec
        /// What the payload means.
        public var contentType: ContentType
        /// Bytes of the stored (possibly compressed) payload.
        public var storedLength: Int
        /// Bytes of the payload once decompressed.
        public var originalLength: Int
        /// When the value was stored, in milliseconds since 1970.
        public var createdAtMilliseconds: Int64
        /// How long it lives, in milliseconds; 0 for ever.
        public var timeToLiveMilliseconds: Int64

        /// When the value expires, in milliseconds since 1970, or `nil` when it never does.
        public var expiresAtMilliseconds: Int64? {
            self.timeToLiveMilliseconds > 0 ? self.createdAtMilliseconds &+ self.timeToLiveMilliseconds : nil
        }

        /// Parses the header of `raw` and checks that the buffer is as long as the header says.
        public init(_ raw: UnsafeRawBufferPointer) throws {
            guard raw.count >= BlobEnvelope.headerSize + BlobEnvelope.trailerSize else {
                throw PanzaError(code: .corruptBlob, message: "blob is \(raw.count) bytes, shorter than an envelope")
            }
            guard raw[0] == magic[0], raw[1] == magic[1], raw[2] == magic[2], raw[3] == magic[3] else {
                throw PanzaError(code: .corruptBlob, message: "blob does not start with the PNZA magic")
            }
            guard raw[4] <= BlobEnvelope.formatVersion, raw[4] > 0 else {
                throw PanzaError(
                    code: .unsupportedFormat,
                    message: "blob format version \(raw[4]) is newer than \(BlobEnvelope.formatVersion)"
                )
            }
            guard let codec = Codec(rawValue: raw[5]) else {
                throw PanzaError(code: .unsupportedFormat, message: "unknown blob codec \(raw[5])")
            }
            guard let contentType = ContentType(rawValue: raw[6]) else {
                throw PanzaError(code: .unsupportedFormat, message: "unknown blob content type \(raw[6])")
            }
            let storedLength = Int(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt32.self)))
            let originalLength = Int(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 12, as: UInt32.self)))
            guard BlobEnvelope.headerSize + storedLength + BlobEnvelope.trailerSize == raw.count else {
                throw PanzaError(
                    code: .corruptBlob,
                    message: "blob is \(raw.count) bytes but its header announces a \(storedLength)-byte payload"
                )
            }
            self.codec = codec
            self.contentType = contentType
            self.storedLength = storedLength
            self.originalLength = originalLength
            self.createdAtMilliseconds = Int64(
                littleEndian: raw.loadUnaligned(fromByteOffset: 16, as: Int64.self)
            )
            self.timeToLiveMilliseconds = Int64(
                littleEndian: raw.loadUnaligned(fromByteOffset: 24, as: Int64.self)
            )
        }
    }
}
