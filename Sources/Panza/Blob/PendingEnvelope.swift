import Foundation

/// A large value on its way to the tiers: its payload as the caller's value holds it, and the
/// header of its envelope. It is encoded where it is stored, frame by frame (the SQLite tier writes
/// each MiB as it is produced), so that a write-behind queue never holds a second copy of a large
/// value, and a read of the pending write needs no decoding at all.
struct PendingEnvelope: Sendable, Equatable {
    /// The payload, in the storage the value came in (no copy).
    enum Payload: Sendable, Equatable {
        case data(Data)
        case bytes([UInt8])
        case text(String)
    }

    var payload: Payload
    var contentType: BlobEnvelope.ContentType
    var createdAtMilliseconds: Int64
    var timeToLiveMilliseconds: Int64
    /// How long after expiry the value is kept, to be served stale (see ``Freshness``).
    var staleForMilliseconds: Int64
    var compress: Bool

    init(
        payload: Payload, contentType: BlobEnvelope.ContentType, createdAtMilliseconds: Int64,
        timeToLiveMilliseconds: Int64, staleForMilliseconds: Int64 = 0, compress: Bool
    ) {
        self.payload = payload
        self.contentType = contentType
        self.createdAtMilliseconds = createdAtMilliseconds
        self.timeToLiveMilliseconds = timeToLiveMilliseconds
        self.staleForMilliseconds = staleForMilliseconds
        self.compress = compress
    }

    /// The value of a decoded envelope, to be encoded again where it is stored (a fill of a value
    /// that was decoded as it streamed in).
    init(decoded: DecodedEnvelope, compress: Bool) {
        switch decoded.payload {
        case .data(let data): self.payload = .data(data)
        case .bytes(let bytes): self.payload = .bytes(bytes)
        }
        self.contentType = decoded.contentType
        self.createdAtMilliseconds = decoded.createdAtMilliseconds
        self.timeToLiveMilliseconds = decoded.timeToLiveMilliseconds
        self.staleForMilliseconds = decoded.staleForMilliseconds
        self.compress = compress
    }

    /// Bytes of the payload.
    var payloadCount: Int {
        switch self.payload {
        case .data(let data): data.count
        case .bytes(let bytes): bytes.count
        case .text(let text): text.utf8.count
        }
    }

    /// When the value was made, expires, and may be dropped.
    var times: EntryTimes {
        EntryTimes(
            createdAtMilliseconds: self.createdAtMilliseconds, timeToLiveMilliseconds: self.timeToLiveMilliseconds,
            staleForMilliseconds: self.staleForMilliseconds)
    }

    /// Calls `body` with the payload's bytes where they are.
    func withPayload<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
        switch self.payload {
        case .data(let data): return try data.withUnsafeBytes(body)
        case .bytes(let bytes): return try bytes.withUnsafeBytes(body)
        case .text(var text): return try text.withUTF8 { try body(UnsafeRawBufferPointer($0)) }
        }
    }

    /// The whole envelope, for a tier that takes bytes.
    func encoded() -> [UInt8] {
        self.withPayload { payload in
            BlobEnvelope.encode(
                payload: payload, contentType: self.contentType, createdAtMilliseconds: self.createdAtMilliseconds,
                timeToLiveMilliseconds: self.timeToLiveMilliseconds, staleForMilliseconds: self.staleForMilliseconds,
                compress: self.compress)
        }
    }

    /// Encodes the envelope in pieces (the header, each frame, the checksum), in order, into
    /// `sink`; the pieces joined are ``encoded()``.
    func encode(into sink: (UnsafeRawBufferPointer) throws -> Void) rethrows {
        try self.withPayload { payload in
            try BlobEnvelope.encode(
                payload: payload, contentType: self.contentType, createdAtMilliseconds: self.createdAtMilliseconds,
                timeToLiveMilliseconds: self.timeToLiveMilliseconds, staleForMilliseconds: self.staleForMilliseconds,
                compress: self.compress, into: sink)
        }
    }

    /// The value as a read of the pending write sees it: no encoding, no copy of bytes payloads.
    var decoded: DecodedEnvelope {
        let payload: DecodedEnvelope.Payload
        switch self.payload {
        case .data(let data): payload = .data(data)
        case .bytes(let bytes): payload = .bytes(bytes)
        case .text(let text): payload = .data(Data(text.utf8))
        }
        return DecodedEnvelope(
            contentType: self.contentType, payload: payload, createdAtMilliseconds: self.createdAtMilliseconds,
            timeToLiveMilliseconds: self.timeToLiveMilliseconds, staleForMilliseconds: self.staleForMilliseconds,
            storedBytes: self.payloadCount)
    }
}
