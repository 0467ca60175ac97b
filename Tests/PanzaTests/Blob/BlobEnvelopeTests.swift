import Foundation
import PanzaTestSupport
import Testing

@testable import Panza

struct BlobEnvelopeTests {
    static let compressibleText = Array(String(repeating: "{\"city\":\"Oslo\",\"temperature\":-3.5}", count: 40).utf8)

    @Test("A compressible payload is stored LZ4-compressed and round-trips")
    func compressibleRoundTrip() throws {
        let envelope = BlobEnvelope(
            contentType: .json, payload: Self.compressibleText, createdAtMilliseconds: 1_700_000_000_000)
        let bytes = envelope.encoded()
        #expect(bytes[4] == 2)
        #expect(bytes.count < Self.compressibleText.count / 4)
        let decoded = try BlobEnvelope.decode(bytes)
        #expect(decoded.payload == Self.compressibleText)
        #expect(decoded.contentType == .json)
        #expect(decoded.storedCodec == .lz4)
        #expect(decoded.createdAtMilliseconds == 1_700_000_000_000)
        #expect(decoded.expiresAtMilliseconds == nil)
    }

    @Test("An incompressible payload is stored as is")
    func incompressibleIsStoredRaw() throws {
        var generator = SystemRandomNumberGenerator()
        let random = (0..<4096).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let bytes = BlobEnvelope(contentType: .bytes, payload: random, createdAtMilliseconds: 1).encoded()
        #expect(
            bytes.count
                == random.count + BlobEnvelope.headerSize + BlobEnvelope.frameHeaderSize + BlobEnvelope.trailerSize)
        let decoded = try BlobEnvelope.decode(bytes)
        #expect(decoded.payload == random)
        #expect(decoded.storedCodec == .none)
    }

    @Test("An empty payload round-trips")
    func emptyPayload() throws {
        let bytes = BlobEnvelope(contentType: .text, payload: [], createdAtMilliseconds: 5).encoded()
        #expect(try BlobEnvelope.decode(bytes).payload == [])
    }

    @Test("The time to live gives the expiry")
    func timeToLive() throws {
        let envelope = BlobEnvelope(
            contentType: .text, payload: [1], createdAtMilliseconds: 1000, timeToLiveMilliseconds: 500)
        let decoded = try BlobEnvelope.decode(envelope.encoded())
        #expect(decoded.expiresAtMilliseconds == 1500)
        #expect(!decoded.isExpired(atMilliseconds: 1499))
        #expect(decoded.isExpired(atMilliseconds: 1500))
    }

    @Test("Flipping any single byte is detected", arguments: [false, true])
    func everyByteFlipIsDetected(compressed: Bool) throws {
        let payload = compressed ? Self.compressibleText : Array("short".utf8)
        let bytes = BlobEnvelope(contentType: .text, payload: payload, createdAtMilliseconds: 42).encoded()
        for index in bytes.indices {
            var damaged = bytes
            damaged[index] ^= 0x20
            #expect(throws: PanzaError.self, "flip at \(index) went unnoticed") {
                _ = try BlobEnvelope.decode(damaged)
            }
        }
    }

    /// Bytes values are decoded straight into a `Data`'s storage, a payload in one raw frame
    /// verified and copied in one pass: every flipped byte is still refused, and nothing is served.
    @Test(
        "A bytes payload decoded into Data round-trips, and any flipped byte is refused",
        arguments: [(0, false), (5, false), (100, false), (4_099, false), (4_099, true), (70_000, false)])
    func bytesIntoData(count: Int, compressible: Bool) throws {
        var generator = SplitMix64(seed: UInt64(count))
        let payload = (0..<count).map { index in
            compressible ? UInt8(index % 7) : UInt8.random(in: 0...255, using: &generator)
        }
        let bytes = BlobEnvelope(contentType: .bytes, payload: payload, createdAtMilliseconds: 42).encoded()
        let decoded = try bytes.withUnsafeBytes { try DecodedEnvelope.decode($0, maxPayloadBytes: .max) }
        guard case .data(let data) = decoded.payload else {
            Issue.record("a bytes payload was not decoded into Data")
            return
        }
        #expect(data == Data(payload))
        #expect(decoded.contentType == .bytes && decoded.createdAtMilliseconds == 42)
        let step = max(1, bytes.count / 600)
        for index in Set(Array(stride(from: 0, to: bytes.count, by: step)) + Array(bytes.indices.suffix(40))) {
            var damaged = bytes
            damaged[index] ^= 0x20
            #expect(throws: PanzaError.self, "flip at \(index) of \(bytes.count) went unnoticed") {
                _ = try damaged.withUnsafeBytes { try DecodedEnvelope.decode($0, maxPayloadBytes: .max) }
            }
        }
        #expect(throws: PanzaError.self) {
            _ = try bytes.withUnsafeBytes { try DecodedEnvelope.decode($0, maxPayloadBytes: count - 1) }
        }
    }

    @Test("Truncated and foreign bytes give corruptBlob")
    func truncatedAndForeign() throws {
        let bytes = BlobEnvelope(contentType: .text, payload: Self.compressibleText, createdAtMilliseconds: 42)
            .encoded()
        for damaged in [
            Array(bytes.dropLast()), Array(bytes.prefix(10)), [],
            Array("not an envelope at all, clearly".utf8) + [UInt8](repeating: 0, count: 20),
        ] {
            let error = try #require(throws: PanzaError.self) { try BlobEnvelope.decode(damaged) }
            #expect(error.code == .corruptBlob)
        }
    }

    @Test("A newer format version gives unsupportedFormat, not corruptBlob")
    func newerVersion() throws {
        var bytes = BlobEnvelope(contentType: .text, payload: [1, 2, 3], createdAtMilliseconds: 42).encoded()
        bytes[4] = BlobEnvelope.formatVersion + 1
        let error = try #require(throws: PanzaError.self) { try BlobEnvelope.decode(bytes) }
        #expect(error.code == .unsupportedFormat)
    }

    @Test("A header that lies about its length is rejected before decompression")
    func lyingLength() throws {
        var bytes = BlobEnvelope(contentType: .text, payload: Self.compressibleText, createdAtMilliseconds: 42)
            .encoded()
        // Claim a huge original length, with a checksum that matches (anyone can compute XXH64):
        // the frames do not add up, and that is found before the payload is allocated.
        bytes.withUnsafeMutableBytes {
            $0.storeBytes(of: UInt64(0x7000_0000).littleEndian, toByteOffset: 8, as: UInt64.self)
        }
        Self.reseal(&bytes)
        let error = try #require(throws: PanzaError.self) { try BlobEnvelope.decode(bytes) }
        #expect(error.code == .corruptBlob)
        // With a limit, the claim is refused before the checksum is even computed.
        let limited = try #require(throws: PanzaError.self) { try BlobEnvelope.decode(bytes, maxPayloadBytes: 1 << 20) }
        #expect(limited.code == .valueTooLarge)
    }

    @Test("A payload of several frames round-trips, compressible and incompressible frames mixed")
    func severalFrames() throws {
        var generator = SystemRandomNumberGenerator()
        let frame = BlobEnvelope.frameSize
        var payload = [UInt8](repeating: 7, count: frame)  // compresses
        payload += (0..<frame).map { _ in UInt8.random(in: 0...255, using: &generator) }  // does not
        payload += Array(Self.compressibleText.prefix(1000))  // a short last frame
        let bytes = BlobEnvelope(contentType: .bytes, payload: payload, createdAtMilliseconds: 9).encoded()
        #expect(bytes.count < payload.count)
        let decoded = try BlobEnvelope.decode(bytes)
        #expect(decoded.payload == payload)
        #expect(decoded.storedCodec == .lz4)
        // A frame cut short is caught by the frame walk, even with a matching checksum.
        var damaged = Array(bytes.prefix(bytes.count - BlobEnvelope.trailerSize - 10)) + [UInt8](repeating: 0, count: 8)
        Self.reseal(&damaged)
        let error = try #require(throws: PanzaError.self) { try BlobEnvelope.decode(damaged) }
        #expect(error.code == .corruptBlob)
    }

    @Test("Encoding in pieces gives the same bytes as encoding whole", arguments: [0, 5, 100, 3 << 19, 5 << 20])
    func piecesMatchWhole(count: Int) throws {
        var random = SplitMix64(seed: UInt64(count))
        // Half compressible, half not, so that both kinds of frame appear.
        let payload = (0..<count).map { $0 % 2 == 0 ? UInt8(truncatingIfNeeded: random.next()) : UInt8($0 % 7) }
        let whole = BlobEnvelope(
            contentType: .bytes, payload: payload, createdAtMilliseconds: 77, timeToLiveMilliseconds: 9
        )
        .encoded()
        var pieces: [UInt8] = []
        payload.withUnsafeBytes { raw in
            BlobEnvelope.encode(
                payload: raw, contentType: .bytes, createdAtMilliseconds: 77, timeToLiveMilliseconds: 9, compress: true
            ) { pieces.append(contentsOf: $0) }
        }
        #expect(pieces == whole)
        // And the stream decoder, fed in uneven pieces, gives the payload back.
        let decoder = EnvelopeStreamDecoder(maxPayloadBytes: .max)
        var offset = 0
        var step = 1
        while offset < whole.count {
            let end = min(offset + step, whole.count)
            try decoder.append(Array(whole[offset..<end]))
            offset = end
            step = step * 3 + 1
        }
        let decoded = try decoder.finish()
        #expect(decoded.payload.array == payload)
        #expect(decoded.timeToLiveMilliseconds == 9)
    }

    @Test("The stream decoder refuses a damaged, cut or overlong stream, and a payload over its limit")
    func streamDecoderRefuses() throws {
        let payload = [UInt8](repeating: 3, count: 3 << 20)
        let whole = BlobEnvelope(contentType: .bytes, payload: payload, createdAtMilliseconds: 1).encoded()
        func decode(_ bytes: [UInt8], limit: Int = .max) throws {
            let decoder = EnvelopeStreamDecoder(maxPayloadBytes: limit)
            try decoder.append(bytes)
            _ = try decoder.finish()
        }
        var flipped = whole
        flipped[whole.count / 2] ^= 1
        for (bytes, code) in [
            (flipped, PanzaError.Code.corruptBlob), (Array(whole.dropLast()), .corruptBlob),
            (whole + [0], .corruptBlob),
        ] {
            let error = try #require(throws: PanzaError.self) { try decode(bytes) }
            #expect(error.code == code)
        }
        let error = try #require(throws: PanzaError.self) { try decode(whole, limit: 1 << 20) }
        #expect(error.code == .valueTooLarge)
    }

    @Test("An unknown signature scheme is an unsupported format, never an unverified hit")
    func unknownSignatureScheme() throws {
        var bytes = BlobEnvelope(contentType: .text, payload: [1, 2, 3], createdAtMilliseconds: 42).encoded()
        bytes[7] = 1
        Self.reseal(&bytes)
        let error = try #require(throws: PanzaError.self) { try BlobEnvelope.decode(bytes) }
        #expect(error.code == .unsupportedFormat)
    }

    /// Recomputes the checksum of a version 2 envelope, as a forger would.
    static func reseal(_ bytes: inout [UInt8]) {
        let end = bytes.count - BlobEnvelope.trailerSize
        let checksum = bytes.withUnsafeBytes { XXHash64.hash(UnsafeRawBufferPointer(rebasing: $0[0..<end])) }
        bytes.withUnsafeMutableBytes { $0.storeBytes(of: checksum.littleEndian, toByteOffset: end, as: UInt64.self) }
    }

    // MARK: Golden blobs

    struct Golden: Sendable, CustomTestStringConvertible {
        var file: String
        var version: UInt8
        var envelope: BlobEnvelope
        var codec: BlobEnvelope.Codec
        var testDescription: String { self.file }
    }

    static let goldenEnvelopes: [(name: String, envelope: BlobEnvelope, codec: BlobEnvelope.Codec)] = [
        (
            "text-lz4",
            BlobEnvelope(contentType: .text, payload: compressibleText, createdAtMilliseconds: 1_764_000_000_000),
            .lz4
        ),
        (
            "bytes-raw",
            BlobEnvelope(
                contentType: .bytes, payload: [0, 1, 2, 3, 254, 255], createdAtMilliseconds: 1_764_000_000_001),
            .none
        ),
        (
            "json-ttl",
            BlobEnvelope(
                contentType: .json, payload: Array("{\"city\":\"Oslo\",\"days\":3}".utf8),
                createdAtMilliseconds: 1_764_000_000_002, timeToLiveMilliseconds: 86_400_000),
            .none
        ),
        // A nil inside one Optional layer (`String??.some(.none)`): content type 3, one byte of depth.
        (
            "null-depth1", BlobEnvelope(contentType: .null, payload: [1], createdAtMilliseconds: 1_764_000_000_003),
            .none
        ),
    ]

    static let goldens: [Golden] =
        goldenEnvelopes.map {
            Golden(file: "blobs/v1-\($0.name).pnza", version: 1, envelope: $0.envelope, codec: $0.codec)
        }
        + goldenEnvelopes.map {
            Golden(file: "blobs/v2-\($0.name).pnza", version: 2, envelope: $0.envelope, codec: $0.codec)
        } + [
            // Three frames (two full, one short) of text that compresses.
            Golden(
                file: "blobs/v2-text-3frames.pnza", version: 2,
                envelope: BlobEnvelope(
                    contentType: .text,
                    payload: Array(repeating: compressibleText, count: (5 * BlobEnvelope.frameSize / 2) / 1440)
                        .flatMap { $0 },
                    createdAtMilliseconds: 1_764_000_000_004, timeToLiveMilliseconds: 3_600_000),
                codec: .lz4)
        ]

    @Test("Golden blobs of format versions 1 and 2 decode", arguments: goldens)
    func goldenBlobsDecode(golden: Golden) throws {
        // Version 1 files can no longer be written: this release writes version 2.
        if Fixtures.regenerate, golden.version == BlobEnvelope.formatVersion {
            try Data(golden.envelope.encoded()).write(to: Fixtures.url(golden.file))
        }
        let decoded = try BlobEnvelope.decode(try Fixtures.bytes(golden.file))
        #expect(decoded.storedVersion == golden.version)
        #expect(decoded.payload == golden.envelope.payload)
        #expect(decoded.storedCodec == golden.codec)
        #expect(decoded.contentType == golden.envelope.contentType)
        #expect(decoded.createdAtMilliseconds == golden.envelope.createdAtMilliseconds)
        #expect(decoded.timeToLiveMilliseconds == golden.envelope.timeToLiveMilliseconds)
        if decoded.storedCodec == .none, golden.version == BlobEnvelope.formatVersion {
            // Raw envelopes are byte-stable; LZ4 output may differ between liblz4 releases.
            #expect(golden.envelope.encoded() == (try Fixtures.bytes(golden.file)))
        }
    }
}
