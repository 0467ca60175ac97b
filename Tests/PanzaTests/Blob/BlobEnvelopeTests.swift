import Foundation
import Testing

@testable import Panza

struct BlobEnvelopeTests {
    static let compressibleText = Array(String(repeating: "{\"city\":\"Oslo\",\"temperature\":-3.5}", count: 40).utf8)

    @Test("A compressible payload is stored LZ4-compressed and round-trips")
    func compressibleRoundTrip() throws {
        let envelope = BlobEnvelope(
            contentType: .json, payload: Self.compressibleText, createdAtMilliseconds: 1_700_000_000_000)
        let bytes = envelope.encoded()
        #expect(bytes[5] == BlobEnvelope.Codec.lz4.rawValue)
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
        #expect(bytes[5] == BlobEnvelope.Codec.none.rawValue)
        #expect(bytes.count == random.count + BlobEnvelope.headerSize + BlobEnvelope.trailerSize)
        #expect(try BlobEnvelope.decode(bytes).payload == random)
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
        // Claim a huge original length: decompression must not be attempted with it.
        bytes.withUnsafeMutableBytes {
            $0.storeBytes(of: UInt32(0x7000_0000).littleEndian, toByteOffset: 12, as: UInt32.self)
        }
        let error = try #require(throws: PanzaError.self) { try BlobEnvelope.decode(bytes) }
        #expect(error.code == .corruptBlob)
    }

    // MARK: Golden blobs

    struct Golden: Sendable, CustomTestStringConvertible {
        var file: String
        var envelope: BlobEnvelope
        var codec: BlobEnvelope.Codec
        var testDescription: String { self.file }
    }

    static let goldens: [Golden] = [
        Golden(
            file: "blobs/v1-text-lz4.pnza",
            envelope: BlobEnvelope(
                contentType: .text, payload: compressibleText, createdAtMilliseconds: 1_764_000_000_000), codec: .lz4),
        Golden(
            file: "blobs/v1-bytes-raw.pnza",
            envelope: BlobEnvelope(
                contentType: .bytes, payload: [0, 1, 2, 3, 254, 255], createdAtMilliseconds: 1_764_000_000_001),
            codec: .none),
        Golden(
            file: "blobs/v1-json-ttl.pnza",
            envelope: BlobEnvelope(
                contentType: .json, payload: Array("{\"city\":\"Oslo\",\"days\":3}".utf8),
                createdAtMilliseconds: 1_764_000_000_002, timeToLiveMilliseconds: 86_400_000),
            codec: .none
        ),
        // A nil inside one Optional layer (`String??.some(.none)`): content type 3, one byte of depth.
        Golden(
            file: "blobs/v1-null-depth1.pnza",
            envelope: BlobEnvelope(contentType: .null, payload: [1], createdAtMilliseconds: 1_764_000_000_003),
            codec: .none
        ),
    ]

    @Test("Golden blobs of format version 1 still decode", arguments: goldens)
    func goldenBlobsDecode(golden: Golden) throws {
        if Fixtures.regenerate {
            try Data(golden.envelope.encoded()).write(to: Fixtures.url(golden.file))
        }
        let decoded = try BlobEnvelope.decode(try Fixtures.bytes(golden.file))
        #expect(decoded.payload == golden.envelope.payload)
        #expect(decoded.storedCodec == golden.codec)
        #expect(decoded.contentType == golden.envelope.contentType)
        #expect(decoded.createdAtMilliseconds == golden.envelope.createdAtMilliseconds)
        #expect(decoded.timeToLiveMilliseconds == golden.envelope.timeToLiveMilliseconds)
        if decoded.storedCodec == .none {
            // Raw envelopes are byte-stable; LZ4 output may differ between liblz4 releases.
            #expect(golden.envelope.encoded() == (try Fixtures.bytes(golden.file)))
        }
    }
}
