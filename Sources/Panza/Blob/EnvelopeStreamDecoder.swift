import Foundation

/// Verifies and decodes an envelope that arrives in pieces (the chunk rows of a SQLite entry, the
/// ranges of an S3 object), decompressing each frame straight into the payload's one allocation:
/// a large value costs its own size plus one frame, never a second whole copy.
///
/// The header is checked as soon as it is complete, and the payload length against the limit
/// before anything is allocated. The checksum covers every byte and is compared in ``finish()``:
/// until then nothing decoded is trusted (LZ4's safe decoder keeps hostile frames inside their
/// buffers). Version 1 envelopes, which are not framed, are gathered whole and decoded at the end.
///
/// `@unchecked Sendable`: a decoder has one user at a time. A SQLite reader uses it on its queue;
/// a remote tier's read feeds it from the task of the read and the lookup calls ``finish()`` after
/// that read returned (a read abandoned at its deadline keeps feeding a decoder nobody will finish,
/// which then frees its buffer). It is never touched by two threads at once.
final class EnvelopeStreamDecoder: @unchecked Sendable {
    private var state: State
    /// The error that stopped decoding, if any (a tier reports it as its own failure).
    private(set) var failure: (any Error)?

    /// A decoder that refuses payloads longer than `maxPayloadBytes`.
    init(maxPayloadBytes: Int) {
        self.state = State(maxPayloadBytes: maxPayloadBytes)
    }

    /// Feeds the next piece of the envelope.
    ///
    /// - Throws: ``PanzaError/Code/corruptBlob``, ``PanzaError/Code/unsupportedFormat`` or
    ///   ``PanzaError/Code/valueTooLarge`` as soon as the bytes seen so far show it.
    func append(_ piece: UnsafeRawBufferPointer) throws {
        do {
            try self.state.append(piece)
        } catch {
            self.failure = error
            throw error
        }
    }

    /// Feeds the next piece of the envelope.
    func append(_ piece: [UInt8]) throws {
        try piece.withUnsafeBytes { try self.append($0) }
    }

    /// Checks that the envelope ended where its header said and that its checksum matches, and
    /// hands out the payload.
    func finish() throws -> DecodedEnvelope {
        try self.state.finish()
    }

    private struct State: ~Copyable {
        enum Phase {
            case header
            case frameWord
            case frameBody(length: Int, storedLength: Int, isRaw: Bool)
            case trailer
            case done
        }

        let maxPayloadBytes: Int
        var phase = Phase.header
        /// The bytes of the header, of a frame's word, or of the trailer, gathered across pieces.
        var small: [UInt8] = []
        /// A frame's stored bytes when they straddle pieces.
        var frame: [UInt8] = []
        var header: BlobEnvelope.Header?
        var payload: UnsafeMutableRawBufferPointer?
        var written = 0
        var framesLeft = 0
        var anyCompressed = false
        var hasher = XXHash64.Streaming()
        var storedBytes = 0
        /// A version 1 envelope, gathered whole.
        var whole: [UInt8]?

        init(maxPayloadBytes: Int) {
            self.maxPayloadBytes = maxPayloadBytes
            self.small.reserveCapacity(BlobEnvelope.headerSize)
        }

        deinit {
            self.payload?.deallocate()
        }

        mutating func append(_ piece: UnsafeRawBufferPointer) throws {
            self.storedBytes += piece.count
            if self.whole != nil {
                self.whole!.append(contentsOf: piece)
                return
            }
            var rest = piece[...]
            while !rest.isEmpty {
                switch self.phase {
                case .header:
                    self.gather(&rest, upTo: BlobEnvelope.headerSize)
                    if self.small.count >= 5, self.small[4] == 1, Array(self.small.prefix(4)) == BlobEnvelope.magic {
                        self.whole = self.small + Array(UnsafeRawBufferPointer(rebasing: rest))
                        return
                    }
                    guard self.small.count == BlobEnvelope.headerSize else { continue }
                    let header = try self.small.withUnsafeBytes { try BlobEnvelope.Header(version2Prefix: $0) }
                    try header.checkPayload(limit: self.maxPayloadBytes)
                    self.small.withUnsafeBytes { self.hasher.update($0) }
                    self.small.removeAll(keepingCapacity: true)
                    self.header = header
                    self.payload = .allocate(byteCount: max(1, header.originalLength), alignment: 16)
                    self.framesLeft = header.frameCount
                    self.phase = self.framesLeft > 0 ? .frameWord : .trailer
                case .frameWord:
                    self.gather(&rest, upTo: BlobEnvelope.frameHeaderSize)
                    guard self.small.count == BlobEnvelope.frameHeaderSize, let header = self.header else { continue }
                    let word = self.small.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self)) }
                    self.small.withUnsafeBytes { self.hasher.update($0) }
                    self.small.removeAll(keepingCapacity: true)
                    let length = min(header.frameSize, header.originalLength - self.written)
                    let (storedLength, isRaw) = try header.checkFrame(word: word, length: length)
                    self.phase = .frameBody(length: length, storedLength: storedLength, isRaw: isRaw)
                case .frameBody(let length, let storedLength, let isRaw):
                    if self.frame.isEmpty, rest.count >= storedLength {
                        // The whole frame is in this piece: no copy.
                        let stored = UnsafeRawBufferPointer(rebasing: rest.prefix(storedLength))
                        try self.decodeFrame(stored, length: length, isRaw: isRaw)
                        rest = rest.dropFirst(storedLength)
                    } else {
                        let take = min(storedLength - self.frame.count, rest.count)
                        self.frame.append(contentsOf: UnsafeRawBufferPointer(rebasing: rest.prefix(take)))
                        rest = rest.dropFirst(take)
                        guard self.frame.count == storedLength else { continue }
                        let frame = self.frame
                        try frame.withUnsafeBytes { try self.decodeFrame($0, length: length, isRaw: isRaw) }
                        self.frame.removeAll(keepingCapacity: true)
                    }
                case .trailer:
                    self.gather(&rest, upTo: BlobEnvelope.trailerSize)
                    if self.small.count == BlobEnvelope.trailerSize { self.phase = .done }
                case .done:
                    throw PanzaError(code: .corruptBlob, message: "blob has bytes after its checksum")
                }
            }
        }

        private mutating func gather(_ rest: inout Slice<UnsafeRawBufferPointer>, upTo count: Int) {
            let take = min(count - self.small.count, rest.count)
            self.small.append(contentsOf: UnsafeRawBufferPointer(rebasing: rest.prefix(take)))
            rest = rest.dropFirst(take)
        }

        private mutating func decodeFrame(_ stored: UnsafeRawBufferPointer, length: Int, isRaw: Bool) throws {
            self.hasher.update(stored)
            let target = UnsafeMutableRawBufferPointer(rebasing: self.payload![self.written..<(self.written + length)])
            if isRaw {
                target.copyMemory(from: stored)
            } else {
                guard LZ4.decompress(stored, into: target) else {
                    throw PanzaError(code: .corruptBlob, message: "an LZ4 frame does not decompress to its length")
                }
                self.anyCompressed = true
            }
            self.written += length
            self.framesLeft -= 1
            self.phase = self.framesLeft > 0 ? .frameWord : .trailer
        }

        mutating func finish() throws -> DecodedEnvelope {
            if let whole = self.whole {
                let envelope = try BlobEnvelope.decode(whole, maxPayloadBytes: self.maxPayloadBytes)
                return DecodedEnvelope(
                    contentType: envelope.contentType, payload: .bytes(envelope.payload),
                    createdAtMilliseconds: envelope.createdAtMilliseconds,
                    timeToLiveMilliseconds: envelope.timeToLiveMilliseconds,
                    staleForMilliseconds: envelope.staleForMilliseconds, storedBytes: whole.count)
            }
            guard case .done = self.phase, let header = self.header, let payload = self.payload else {
                throw PanzaError(code: .corruptBlob, message: "blob ends before its checksum")
            }
            let expected = self.small.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
            guard expected == self.hasher.finalize() else {
                throw PanzaError(code: .corruptBlob, message: "blob checksum mismatch")
            }
            self.payload = nil
            return DecodedEnvelope(
                contentType: header.contentType, payload: .data(Data(adopting: payload, count: header.originalLength)),
                createdAtMilliseconds: header.createdAtMilliseconds,
                timeToLiveMilliseconds: header.timeToLiveMilliseconds,
                staleForMilliseconds: header.staleForMilliseconds, storedBytes: self.storedBytes)
        }
    }
}

/// A verified envelope, its payload either an array (small values, decoded whole) or `Data` that
/// owns the buffer a stream decoder filled (large values: handed to a `Data` result without a copy).
struct DecodedEnvelope: Sendable {
    enum Payload: Sendable {
        case bytes([UInt8])
        case data(Data)

        var count: Int {
            switch self {
            case .bytes(let bytes): bytes.count
            case .data(let data): data.count
            }
        }

        var data: Data {
            switch self {
            case .bytes(let bytes): Data(bytes)
            case .data(let data): data
            }
        }

        var array: [UInt8] {
            switch self {
            case .bytes(let bytes): bytes
            case .data(let data): [UInt8](data)
            }
        }
    }

    var contentType: BlobEnvelope.ContentType
    var payload: Payload
    var createdAtMilliseconds: Int64
    var timeToLiveMilliseconds: Int64
    var staleForMilliseconds: Int64
    /// Bytes of the envelope as stored.
    var storedBytes: Int

    /// When the value was made, expires, and may be dropped.
    var times: EntryTimes {
        EntryTimes(
            createdAtMilliseconds: self.createdAtMilliseconds, timeToLiveMilliseconds: self.timeToLiveMilliseconds,
            staleForMilliseconds: self.staleForMilliseconds)
    }
}

extension DecodedEnvelope {
    /// A verified whole envelope: decoded in place when it is small, through the stream decoder
    /// (payload handed out without a copy) when it is large.
    static func decode(_ blob: [UInt8], maxPayloadBytes: Int) throws -> DecodedEnvelope {
        try blob.withUnsafeBytes { try self.decode($0, maxPayloadBytes: maxPayloadBytes) }
    }

    /// A verified whole envelope read where its bytes are (SQLite's buffer, for one): the payload
    /// is the one copy made. Bytes payloads are decoded into the storage of a `Data` (what a bytes
    /// value is most often read as), which a `Data` result then takes without a copy.
    static func decode(_ raw: UnsafeRawBufferPointer, maxPayloadBytes: Int) throws -> DecodedEnvelope {
        if raw.count > BlobEnvelope.frameSize {
            let decoder = EnvelopeStreamDecoder(maxPayloadBytes: maxPayloadBytes)
            try decoder.append(raw)
            return try decoder.finish()
        }
        let header = try BlobEnvelope.Header(raw, maxPayloadBytes: maxPayloadBytes)
        if header.version >= 2, header.contentType == .bytes {
            let (data, _) = try BlobEnvelope.verifiedPayload(ofVersion2: raw, header: header) { count, fill in
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, count), alignment: 16)
                do {
                    try fill(UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count]))
                } catch {
                    buffer.deallocate()
                    throw error
                }
                return Data(adopting: buffer, count: count)
            }
            return DecodedEnvelope(
                contentType: header.contentType, payload: .data(data),
                createdAtMilliseconds: header.createdAtMilliseconds,
                timeToLiveMilliseconds: header.timeToLiveMilliseconds,
                staleForMilliseconds: header.staleForMilliseconds, storedBytes: raw.count)
        }
        let envelope = try BlobEnvelope.decode(raw, maxPayloadBytes: maxPayloadBytes)
        return DecodedEnvelope(
            contentType: envelope.contentType, payload: .bytes(envelope.payload),
            createdAtMilliseconds: envelope.createdAtMilliseconds,
            timeToLiveMilliseconds: envelope.timeToLiveMilliseconds,
            staleForMilliseconds: envelope.staleForMilliseconds, storedBytes: raw.count)
    }
}

extension Data {
    /// A `Data` of the first `count` bytes of `buffer`, which it owns from now on (and deallocates
    /// when released): a decoded payload handed to a `Data` result without a copy.
    init(adopting buffer: UnsafeMutableRawBufferPointer, count: Int) {
        guard count > 0 else {
            buffer.deallocate()
            self.init()
            return
        }
        self.init(
            bytesNoCopy: buffer.baseAddress!, count: count, deallocator: .custom { pointer, _ in pointer.deallocate() })
    }
}
