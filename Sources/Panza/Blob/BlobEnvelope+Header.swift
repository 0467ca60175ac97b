extension BlobEnvelope {
    /// The fixed-size header of an envelope of either format version, parsed without touching the
    /// payload.
    public struct Header: Hashable, Sendable {
        /// The format version the envelope was written in (1 or 2).
        public var version: UInt8
        /// How the payload is stored (version 1); ``Codec/lz4`` when any frame is compressed (version 2,
        /// known once the frames are walked, else ``Codec/none``).
        public var codec: Codec
        /// What the payload means.
        public var contentType: ContentType
        /// Bytes of the payload once decompressed.
        public var originalLength: Int
        /// When the value was stored, in milliseconds since 1970.
        public var createdAtMilliseconds: Int64
        /// How long it lives, in milliseconds; 0 for ever.
        public var timeToLiveMilliseconds: Int64
        /// How long after expiry the value may be served as stale, in milliseconds (version 2; else 0).
        public var staleForMilliseconds: Int64
        /// Payload bytes per frame (version 2; the whole payload in version 1).
        var frameSize: Int
        /// Where the checksum starts: the frames (or the version 1 payload) end there.
        var checksumOffset: Int

        /// Bytes before the payload of a version 1 envelope.
        static let version1Size = 32

        /// When the value expires, in milliseconds since 1970, or `nil` when it never does.
        public var expiresAtMilliseconds: Int64? {
            self.timeToLiveMilliseconds > 0 ? self.createdAtMilliseconds &+ self.timeToLiveMilliseconds : nil
        }

        /// Parses the header of `raw` and checks that the buffer is as long as the header says.
        ///
        /// - Throws: ``PanzaError/Code/corruptBlob`` for bytes that are not an envelope,
        ///   ``PanzaError/Code/unsupportedFormat`` for a newer version, codec, content type or
        ///   signature scheme.
        public init(_ raw: UnsafeRawBufferPointer) throws {
            guard raw.count >= Self.version1Size + BlobEnvelope.trailerSize else {
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
            self.version = raw[4]
            self.createdAtMilliseconds = Int64(littleEndian: raw.loadUnaligned(fromByteOffset: 16, as: Int64.self))
            self.timeToLiveMilliseconds = Int64(littleEndian: raw.loadUnaligned(fromByteOffset: 24, as: Int64.self))
            if self.version == 1 {
                guard let codec = Codec(rawValue: raw[5]) else {
                    throw PanzaError(code: .unsupportedFormat, message: "unknown blob codec \(raw[5])")
                }
                self.codec = codec
                self.contentType = try Self.contentType(raw[6])
                let storedLength = Int(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt32.self)))
                self.originalLength = Int(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 12, as: UInt32.self)))
                guard Self.version1Size + storedLength + BlobEnvelope.trailerSize == raw.count else {
                    throw PanzaError(
                        code: .corruptBlob,
                        message: "blob is \(raw.count) bytes but its header announces a \(storedLength)-byte payload"
                    )
                }
                self.staleForMilliseconds = 0
                self.frameSize = self.originalLength
                self.checksumOffset = Self.version1Size + storedLength
                return
            }
            guard raw.count >= BlobEnvelope.headerSize + BlobEnvelope.trailerSize else {
                throw PanzaError(code: .corruptBlob, message: "blob is \(raw.count) bytes, shorter than an envelope")
            }
            self = try Header(version2Prefix: UnsafeRawBufferPointer(rebasing: raw[0..<BlobEnvelope.headerSize]))
            self.checksumOffset = raw.count - BlobEnvelope.trailerSize
        }

        /// Parses the header of `raw` (see ``init(_:)``) and refuses one whose payload is longer than
        /// `maxPayloadBytes`, before anything is allocated for it (bytes from a shared bucket are not
        /// trusted).
        ///
        /// - Throws: what ``init(_:)`` throws, and ``PanzaError/Code/valueTooLarge``.
        init(_ raw: UnsafeRawBufferPointer, maxPayloadBytes: Int) throws {
            try self.init(raw)
            try self.checkPayload(limit: maxPayloadBytes)
        }

        /// Throws ``PanzaError/Code/valueTooLarge`` when the payload is longer than `limit`.
        func checkPayload(limit: Int) throws {
            guard self.originalLength <= limit else {
                throw PanzaError(
                    code: .valueTooLarge,
                    message: "the envelope holds \(self.originalLength) bytes, more than the \(limit) accepted"
                )
            }
        }

        /// Parses the 48 header bytes of a version 2 envelope whose length may not be known yet (it
        /// arrives in pieces); ``checksumOffset`` is left at -1.
        init(version2Prefix raw: UnsafeRawBufferPointer) throws {
            precondition(raw.count == BlobEnvelope.headerSize)
            guard raw[0] == magic[0], raw[1] == magic[1], raw[2] == magic[2], raw[3] == magic[3] else {
                throw PanzaError(code: .corruptBlob, message: "blob does not start with the PNZA magic")
            }
            guard raw[4] == 2 else {
                throw PanzaError(
                    code: raw[4] > BlobEnvelope.formatVersion ? .unsupportedFormat : .corruptBlob,
                    message: "blob format version \(raw[4]) where version 2 was expected"
                )
            }
            self.version = 2
            self.createdAtMilliseconds = Int64(littleEndian: raw.loadUnaligned(fromByteOffset: 16, as: Int64.self))
            self.timeToLiveMilliseconds = Int64(littleEndian: raw.loadUnaligned(fromByteOffset: 24, as: Int64.self))
            self.contentType = try Self.contentType(raw[5])
            guard raw[6] == 0 else {
                throw PanzaError(code: .unsupportedFormat, message: "unknown blob flags \(raw[6])")
            }
            // Scheme 0 is the only one this release knows; a signed envelope is refused rather than
            // served unverified.
            guard raw[7] == 0 else {
                throw PanzaError(code: .unsupportedFormat, message: "unknown blob signature scheme \(raw[7])")
            }
            let length = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
            guard length <= UInt64(Int.max / 2) else {
                throw PanzaError(code: .corruptBlob, message: "blob announces an impossible payload length \(length)")
            }
            self.originalLength = Int(length)
            self.staleForMilliseconds = Int64(littleEndian: raw.loadUnaligned(fromByteOffset: 32, as: Int64.self))
            self.frameSize = Int(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 40, as: UInt32.self)))
            guard BlobEnvelope.acceptedFrameSizes.contains(self.frameSize) else {
                throw PanzaError(code: .corruptBlob, message: "blob announces a frame size of \(self.frameSize) bytes")
            }
            let signatureLength = Int(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 44, as: UInt32.self)))
            guard signatureLength == 0 else {
                throw PanzaError(code: .corruptBlob, message: "an unsigned blob announces a signature")
            }
            self.checksumOffset = -1
            self.codec = .none
        }

        /// The number of frames of a version 2 payload.
        var frameCount: Int { (self.originalLength + self.frameSize - 1) / self.frameSize }

        /// Checks the word of a version 2 frame whose payload is `length` bytes.
        ///
        /// - Returns: the frame's stored length and whether it is stored raw.
        func checkFrame(word: UInt32, length: Int) throws -> (storedLength: Int, isRaw: Bool) {
            let isRaw = word & BlobEnvelope.rawFrameBit != 0
            let storedLength = Int(word & ~BlobEnvelope.rawFrameBit)
            let worst = LZ4.compressBound(self.frameSize) ?? self.frameSize
            guard storedLength > 0, isRaw ? storedLength == length : storedLength <= worst else {
                throw PanzaError(code: .corruptBlob, message: "a frame of the blob has an impossible length")
            }
            return (storedLength, isRaw)
        }

        private static func contentType(_ byte: UInt8) throws -> ContentType {
            guard let contentType = ContentType(rawValue: byte) else {
                throw PanzaError(code: .unsupportedFormat, message: "unknown blob content type \(byte)")
            }
            return contentType
        }

        /// One frame of a version 2 envelope: where its stored bytes are and how long it is decompressed.
        struct Frame {
            var stored: Range<Int>
            var length: Int
            var isRaw: Bool
        }

        /// Walks the frames of a version 2 envelope in order, checking that they are as many as the
        /// payload length needs, that each is no longer than LZ4 could make its frame, and that they
        /// end exactly at the checksum; calls `body` with each frame as it is checked. Allocates
        /// nothing: a hit walks its envelope's frames twice (checked, then decoded) rather than
        /// keeping a list of them.
        ///
        /// A walk that throws may have called `body` with the frames before the bad one; callers
        /// walk once without decoding (``BlobEnvelope/verifiedPayload(ofVersion2:header:into:)``)
        /// before they allocate anything for the payload.
        func walkFrames(in raw: UnsafeRawBufferPointer, _ body: (Frame) throws -> Void) throws {
            let count = self.frameCount
            // Each frame takes at least its word and one byte: a header that announces more frames
            // than the bytes can hold is refused before any is walked.
            guard count <= (self.checksumOffset - BlobEnvelope.headerSize) / (BlobEnvelope.frameHeaderSize + 1) else {
                throw PanzaError(code: .corruptBlob, message: "blob ends inside its frames")
            }
            var offset = BlobEnvelope.headerSize
            var remaining = self.originalLength
            for _ in 0..<count {
                guard offset + BlobEnvelope.frameHeaderSize <= self.checksumOffset else {
                    throw PanzaError(code: .corruptBlob, message: "blob ends inside its frames")
                }
                let word = UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
                let length = min(self.frameSize, remaining)
                let (storedLength, isRaw) = try self.checkFrame(word: word, length: length)
                let start = offset + BlobEnvelope.frameHeaderSize
                guard start + storedLength <= self.checksumOffset else {
                    throw PanzaError(code: .corruptBlob, message: "a frame of the blob has an impossible length")
                }
                try body(Frame(stored: start..<(start + storedLength), length: length, isRaw: isRaw))
                offset = start + storedLength
                remaining -= length
            }
            guard offset == self.checksumOffset else {
                throw PanzaError(code: .corruptBlob, message: "blob has bytes after its last frame")
            }
        }
    }
}
