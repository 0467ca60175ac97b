/// The self-describing, checksummed container around every value Panza stores below memory.
///
/// The same bytes are written to SQLite and to remote tiers, so any tier can serve any other.
/// This release writes format version 2 and reads versions 1 and 2; both layouts are documented in
/// `docs/blob-format.md`. Version 2 (all integers little-endian):
///
/// | offset | size | field |
/// |-------:|-----:|-------|
/// | 0 | 4 | magic `PNZA` |
/// | 4 | 1 | format version (2) |
/// | 5 | 1 | content type: 0 bytes, 1 UTF-8 text, 2 JSON, 3 null (a `nil`) |
/// | 6 | 1 | flags, reserved (0) |
/// | 7 | 1 | signature scheme: 0 none |
/// | 8 | 8 | payload length (before compression) |
/// | 16 | 8 | creation time, milliseconds since 1970 |
/// | 24 | 8 | time to live in milliseconds, 0 for none |
/// | 32 | 8 | stale period in milliseconds after expiry (see `Freshness`), 0 for none |
/// | 40 | 4 | frame size: payload bytes per frame (1 MiB) |
/// | 44 | 4 | signature length (0 for scheme 0) |
/// | 48 | … | frames: a 4-byte word (bit 31: stored raw; bits 0–30: stored length), then the bytes |
/// | end | 8 | XXH64 (seed 0) of every byte before it |
/// | end + 8 | s | signature (none yet) |
///
/// The payload is cut into frames of one frame size (the last one shorter), each LZ4-compressed on
/// its own, so that tiers can store and fetch a large value in pieces and a reader decompresses
/// straight into the value's buffer.
public struct BlobEnvelope: Hashable, Sendable {
    /// How the payload is stored.
    public enum Codec: UInt8, Hashable, Sendable, CustomStringConvertible {
        /// Stored as is (compression would not have made it smaller).
        case none = 0
        /// An LZ4 block (liblz4 `LZ4_compress_default`); in version 2, at least one frame is.
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
    public static let formatVersion: UInt8 = 2
    /// Bytes before the first frame (format version 2).
    public static let headerSize = 48
    /// Bytes after the last frame (the checksum), when the envelope is not signed.
    public static let trailerSize = 8
    /// Payload bytes per frame, as this release writes them.
    public static let frameSize = 1 << 20
    /// The frame sizes a reader accepts: 4 KiB to 64 MiB.
    static let acceptedFrameSizes = (4 << 10)...(64 << 20)
    /// Bytes of the word before each frame.
    static let frameHeaderSize = 4
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
    /// How long after its expiry the value is kept, to be served stale by callers whose
    /// ``Freshness`` allows it, in milliseconds (format version 2; `0` for none).
    public var staleForMilliseconds: Int64 = 0
    /// The codec the envelope was decoded from (``Codec/none`` for envelopes built in memory).
    public private(set) var storedCodec: Codec = .none
    /// The format version the envelope was decoded from (``formatVersion`` for envelopes built in memory).
    public private(set) var storedVersion: UInt8 = Self.formatVersion

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

    /// Serializes the envelope in format version 2, LZ4-compressing each frame of the payload when
    /// that makes it smaller.
    ///
    /// - Parameter compress: pass `false` to store the payload as is.
    /// - Complexity: O(*n*) in the payload's length; the result is the only allocation.
    public func encoded(compress: Bool = true) -> [UInt8] {
        self.payload.withUnsafeBytes { payload in
            Self.encode(
                payload: payload, contentType: self.contentType, createdAtMilliseconds: self.createdAtMilliseconds,
                timeToLiveMilliseconds: self.timeToLiveMilliseconds, staleForMilliseconds: self.staleForMilliseconds,
                compress: compress)
        }
    }

    /// Serializes an envelope of `payload` without copying it first: what ``encoded(compress:)``
    /// does, for payloads that live elsewhere (the bytes of a `Data` or a `String`).
    package static func encode(
        payload: UnsafeRawBufferPointer,
        contentType: ContentType,
        createdAtMilliseconds: Int64,
        timeToLiveMilliseconds: Int64,
        staleForMilliseconds: Int64 = 0,
        compress: Bool
    ) -> [UInt8] {
        let frameSize = Self.frameSize
        let frameCount = (payload.count + frameSize - 1) / frameSize
        let compresses = compress && payload.count >= Self.minimumCompressibleSize
        // Room for the worst case; pages never written are never touched.
        let worstFrame = compresses ? max(LZ4.compressBound(frameSize) ?? frameSize, frameSize) : frameSize
        let capacity =
            Self.headerSize + payload.count + frameCount * Self.frameHeaderSize + Self.trailerSize
            + (compresses ? frameCount * (worstFrame - frameSize) : 0)
        return [UInt8](unsafeUninitializedCapacity: capacity) { buffer, initialized in
            let raw = UnsafeMutableRawBufferPointer(buffer)
            raw.copyBytes(from: Self.magic)
            raw[4] = Self.formatVersion
            raw[5] = contentType.rawValue
            raw[6] = 0
            raw[7] = 0
            raw.storeBytes(of: UInt64(payload.count).littleEndian, toByteOffset: 8, as: UInt64.self)
            raw.storeBytes(of: createdAtMilliseconds.littleEndian, toByteOffset: 16, as: Int64.self)
            raw.storeBytes(of: max(0, timeToLiveMilliseconds).littleEndian, toByteOffset: 24, as: Int64.self)
            raw.storeBytes(of: max(0, staleForMilliseconds).littleEndian, toByteOffset: 32, as: Int64.self)
            raw.storeBytes(of: UInt32(frameSize).littleEndian, toByteOffset: 40, as: UInt32.self)
            raw.storeBytes(of: UInt32(0).littleEndian, toByteOffset: 44, as: UInt32.self)
            var offset = Self.headerSize
            var start = 0
            while start < payload.count {
                let frame = UnsafeRawBufferPointer(rebasing: payload[start..<min(start + frameSize, payload.count)])
                let bodyStart = offset + Self.frameHeaderSize
                let body = UnsafeMutableRawBufferPointer(
                    rebasing: raw[bodyStart..<min(bodyStart + worstFrame, raw.count - Self.trailerSize)])
                let word = Self.storeFrame(frame, into: body, compresses: compresses)
                raw.storeBytes(of: word.littleEndian, toByteOffset: offset, as: UInt32.self)
                offset += Self.frameHeaderSize + Int(word & ~Self.rawFrameBit)
                start += frame.count
            }
            let checksum = XXHash64.hash(UnsafeRawBufferPointer(rebasing: raw[0..<offset]))
            raw.storeBytes(of: checksum.littleEndian, toByteOffset: offset, as: UInt64.self)
            initialized = offset + Self.trailerSize
        }
    }

    /// Serializes an envelope of `payload` in pieces: the header, each frame (its word and bytes),
    /// then the checksum, in order, into `sink`. Only one frame is held at a time; the pieces
    /// joined are what ``encode(payload:contentType:createdAtMilliseconds:timeToLiveMilliseconds:staleForMilliseconds:compress:)``
    /// returns.
    static func encode(
        payload: UnsafeRawBufferPointer,
        contentType: ContentType,
        createdAtMilliseconds: Int64,
        timeToLiveMilliseconds: Int64,
        staleForMilliseconds: Int64 = 0,
        compress: Bool,
        into sink: (UnsafeRawBufferPointer) throws -> Void
    ) rethrows {
        var hasher = XXHash64.Streaming()
        var header = [UInt8](repeating: 0, count: Self.headerSize)
        header.withUnsafeMutableBytes { raw in
            raw.copyBytes(from: Self.magic)
            raw[4] = Self.formatVersion
            raw[5] = contentType.rawValue
            raw.storeBytes(of: UInt64(payload.count).littleEndian, toByteOffset: 8, as: UInt64.self)
            raw.storeBytes(of: createdAtMilliseconds.littleEndian, toByteOffset: 16, as: Int64.self)
            raw.storeBytes(of: max(0, timeToLiveMilliseconds).littleEndian, toByteOffset: 24, as: Int64.self)
            raw.storeBytes(of: max(0, staleForMilliseconds).littleEndian, toByteOffset: 32, as: Int64.self)
            raw.storeBytes(of: UInt32(Self.frameSize).littleEndian, toByteOffset: 40, as: UInt32.self)
        }
        try header.withUnsafeBytes { raw in
            hasher.update(raw)
            try sink(raw)
        }
        let compresses = compress && payload.count >= Self.minimumCompressibleSize
        let worstFrame = max(LZ4.compressBound(Self.frameSize) ?? Self.frameSize, Self.frameSize)
        let scratch = UnsafeMutableRawBufferPointer.allocate(
            byteCount: Self.frameHeaderSize + worstFrame, alignment: 16)
        defer { scratch.deallocate() }
        var start = 0
        while start < payload.count {
            let frame = UnsafeRawBufferPointer(rebasing: payload[start..<min(start + Self.frameSize, payload.count)])
            let body = UnsafeMutableRawBufferPointer(rebasing: scratch[Self.frameHeaderSize...])
            let word = Self.storeFrame(frame, into: body, compresses: compresses)
            scratch.storeBytes(of: word.littleEndian, toByteOffset: 0, as: UInt32.self)
            let piece = UnsafeRawBufferPointer(
                rebasing: scratch[0..<(Self.frameHeaderSize + Int(word & ~Self.rawFrameBit))])
            hasher.update(piece)
            try sink(piece)
            start += frame.count
        }
        try withUnsafeBytes(of: hasher.finalize().littleEndian) { try sink($0) }
    }

    /// Writes one frame's stored bytes into `body`: LZ4 when `compresses` and that makes it smaller,
    /// else raw. Returns the frame's word (its stored length, bit 31 set for a raw frame).
    private static func storeFrame(
        _ frame: UnsafeRawBufferPointer, into body: UnsafeMutableRawBufferPointer, compresses: Bool
    ) -> UInt32 {
        if compresses, let written = LZ4.compress(frame, into: body) { return UInt32(written) }
        UnsafeMutableRawBufferPointer(rebasing: body[body.startIndex..<(body.startIndex + frame.count)])
            .copyMemory(from: frame)
        return UInt32(frame.count) | Self.rawFrameBit
    }

    /// The creation time in the header of stored envelope bytes (versions 1 and 2 keep it at
    /// offset 16), without verifying anything else; `nil` when the bytes are no envelope.
    package static func createdAtMilliseconds(ofStored bytes: [UInt8]) -> Int64? {
        self.times(ofStored: bytes)?.createdAtMilliseconds
    }

    /// When the value in the envelope `bytes` (or their first 40 bytes) was made, expires and may
    /// be dropped, read from the header without verifying anything; `nil` when they are no envelope.
    static func times(ofStored bytes: [UInt8]) -> EntryTimes? {
        guard bytes.count >= 32, bytes[0..<4].elementsEqual(Self.magic) else { return nil }
        return bytes.withUnsafeBytes { raw in
            EntryTimes(
                createdAtMilliseconds: Int64(littleEndian: raw.loadUnaligned(fromByteOffset: 16, as: Int64.self)),
                timeToLiveMilliseconds: Int64(littleEndian: raw.loadUnaligned(fromByteOffset: 24, as: Int64.self)),
                staleForMilliseconds: bytes[4] >= 2 && bytes.count >= 40
                    ? Int64(littleEndian: raw.loadUnaligned(fromByteOffset: 32, as: Int64.self)) : 0)
        }
    }

    /// Bit 31 of a frame's word: the frame is stored raw.
    static let rawFrameBit: UInt32 = 1 << 31

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
        let header = try Header(raw, maxPayloadBytes: maxPayloadBytes)
        let payload: [UInt8]
        var codec = header.codec
        if header.version == 1 {
            try Self.verifyChecksum(raw, header: header)
            payload = try Self.payloadOfVersion1(raw, header: header)
        } else {
            (payload, codec) = try Self.verifiedPayload(ofVersion2: raw, header: header) { count, fill in
                try [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
                    try fill(UnsafeMutableRawBufferPointer(buffer))
                    initialized = count
                }
            }
        }
        var envelope = BlobEnvelope(
            contentType: header.contentType,
            payload: payload,
            createdAtMilliseconds: header.createdAtMilliseconds,
            timeToLiveMilliseconds: header.timeToLiveMilliseconds
        )
        envelope.staleForMilliseconds = header.staleForMilliseconds
        envelope.storedCodec = codec
        envelope.storedVersion = header.version
        return envelope
    }

    /// Throws ``PanzaError/Code/corruptBlob`` unless the checksum of `raw` matches its bytes.
    private static func verifyChecksum(_ raw: UnsafeRawBufferPointer, header: Header) throws {
        let covered = UnsafeRawBufferPointer(rebasing: raw[0..<header.checksumOffset])
        guard XXHash64.hash(covered) == Self.storedChecksum(raw, header: header) else {
            throw Self.checksumMismatch
        }
    }

    private static func storedChecksum(_ raw: UnsafeRawBufferPointer, header: Header) -> UInt64 {
        UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: header.checksumOffset, as: UInt64.self))
    }

    private static var checksumMismatch: PanzaError {
        PanzaError(code: .corruptBlob, message: "blob checksum mismatch")
    }

    /// Verifies a version 2 envelope and decodes its payload into storage that `makeStorage`
    /// allocates once the frames were walked (their lengths checked against the buffer):
    /// `makeStorage(count, fill)` allocates `count` bytes, has `fill` write them, and returns them.
    ///
    /// A payload in one frame stored raw (a small value, or one that did not compress) is verified
    /// and copied in one pass over its bytes; `fill` then throws when the checksum does not match,
    /// and nothing it wrote is returned. Any other payload is decompressed only after its checksum
    /// was verified.
    static func verifiedPayload<Storage>(
        ofVersion2 raw: UnsafeRawBufferPointer,
        header: Header,
        into makeStorage: (Int, (UnsafeMutableRawBufferPointer) throws -> Void) throws -> Storage
    ) throws -> (Storage, Codec) {
        // The frames are checked first, without decoding: nothing is allocated for the payload
        // before they are.
        var first: Header.Frame?
        var compressed = false
        try header.walkFrames(in: raw) { frame in
            if first == nil { first = frame }
            if !frame.isRaw { compressed = true }
        }
        let expected = Self.storedChecksum(raw, header: header)
        let covered = UnsafeRawBufferPointer(rebasing: raw[0..<header.checksumOffset])
        if header.frameCount == 1, let frame = first, frame.isRaw {
            let storage = try makeStorage(frame.length) { target in
                guard XXHash64.hash(covered, copying: frame.stored, to: target.baseAddress) == expected else {
                    throw Self.checksumMismatch
                }
            }
            return (storage, .none)
        }
        guard XXHash64.hash(covered) == expected else { throw Self.checksumMismatch }
        let storage = try makeStorage(header.originalLength) { output in
            var start = 0
            try header.walkFrames(in: raw) { frame in
                let target = UnsafeMutableRawBufferPointer(rebasing: output[start..<(start + frame.length)])
                let stored = UnsafeRawBufferPointer(rebasing: raw[frame.stored])
                if frame.isRaw {
                    target.copyMemory(from: stored)
                } else if !LZ4.decompress(stored, into: target) {
                    throw PanzaError(code: .corruptBlob, message: "an LZ4 frame does not decompress to its length")
                }
                start += frame.length
            }
        }
        return (storage, compressed ? .lz4 : .none)
    }

    /// The payload of a version 1 envelope (one LZ4 block or raw bytes).
    private static func payloadOfVersion1(_ raw: UnsafeRawBufferPointer, header: Header) throws -> [UInt8] {
        let stored = UnsafeRawBufferPointer(rebasing: raw[Header.version1Size..<header.checksumOffset])
        switch header.codec {
        case .none:
            guard stored.count == header.originalLength else {
                throw PanzaError(code: .corruptBlob, message: "uncompressed blob has inconsistent lengths")
            }
            return Array(stored)
        case .lz4:
            guard let decompressed = LZ4.decompress(stored, originalSize: header.originalLength) else {
                throw PanzaError(code: .corruptBlob, message: "LZ4 payload does not decompress to its stated length")
            }
            return decompressed
        }
    }
}
