import Foundation
import Testing

@testable import Panza

/// The stored form follows the declared type: Optionals (nested or not) and `nil` round-trip.
struct ValueCodingTests {
    struct Report: Codable, Equatable, Sendable {
        var title: String
        var scores: [Int?]
    }

    func roundTrip<Value: Codable & Equatable>(_ value: Value, as type: Value.Type = Value.self) throws -> Value {
        let (contentType, payload) = try ValueCoding.encode(value)
        let envelope = BlobEnvelope(contentType: contentType, payload: payload, createdAtMilliseconds: 1)
        let decoded = try BlobEnvelope.decode(envelope.encoded())
        return try ValueCoding.decode(Value.self, from: decoded, key: "k")
    }

    @Test("Optionals of Data, [UInt8] and String keep their raw form and round-trip")
    func optionalRawForms() throws {
        #expect(try ValueCoding.encode(String?.some("hi")).0 == .text)
        #expect(try ValueCoding.encode(Data?.some(Data([1, 2]))).0 == .bytes)
        #expect(try ValueCoding.encode([UInt8]??.some(.some([3]))).0 == .bytes)
        #expect(try self.roundTrip(String?.some("hi")) == "hi")
        #expect(try self.roundTrip(Data?.some(Data([1, 2]))) == Data([1, 2]))
        #expect(try self.roundTrip([UInt8]?.some([9])) == [9])
        #expect(try self.roundTrip(String??.some(.some("deep"))) == .some(.some("deep")))
    }

    @Test("nil round-trips at every depth, distinct from a value that encodes as null")
    func nils() throws {
        #expect(try ValueCoding.encode(String?.none).0 == .null)
        #expect(try self.roundTrip(String?.none) == nil)
        #expect(try self.roundTrip(Int?.none) == nil)
        let inner: String?? = .some(.none)
        #expect(try self.roundTrip(inner) == .some(.none))
        #expect(try self.roundTrip(String??.none) == .none)
        let scores: [Int?]?? = .some(.some([nil]))
        #expect(try self.roundTrip(scores) == .some(.some([nil])), "[nil] is a value, not a nil")
        #expect(
            try self.roundTrip(Report?.some(Report(title: "t", scores: [1, nil])))
                == Report(title: "t", scores: [1, nil]))
    }

    @Test("A stored nil read as a non-Optional type is a decoding failure, not a crash")
    func nilAsNonOptional() throws {
        let envelope = BlobEnvelope(contentType: .null, payload: [0], createdAtMilliseconds: 1)
        let error = try #require(throws: PanzaError.self) {
            try ValueCoding.decode(String.self, from: envelope, key: "k")
        }
        #expect(error.code == .decodingFailed)
        let tooDeep = BlobEnvelope(contentType: .null, payload: [3], createdAtMilliseconds: 1)
        #expect(throws: PanzaError.self) { try ValueCoding.decode(String??.self, from: tooDeep, key: "k") }
    }

    @Test("An Optional entry written before the null content type (JSON null) still reads as nil")
    func legacyNull() throws {
        let envelope = BlobEnvelope(contentType: .json, payload: Array("null".utf8), createdAtMilliseconds: 1)
        #expect(try ValueCoding.decode(Int?.self, from: envelope, key: "k") == nil)
    }

    @Test("Optional results survive a restart through SQLite, memoized and read-through")
    func optionalAfterRestart() async throws {
        let directory = try TemporaryDirectory()
        let calls = CallCounter()
        for round in 0..<2 {
            let cache = try await makeCache(in: directory, memory: nil)
            let lookup = cache.memoize(id: "lookup") { (name: String) async throws -> String? in
                calls.increment()
                return name == "missing" ? nil : "found \(name)"
            }
            #expect(try await lookup("a") == "found a", "round \(round)")
            #expect(try await lookup("missing") == nil, "round \(round)")
            let data: Data? = try await cache.value(forKey: "data") { Data?.some(Data([7])) }
            #expect(data == Data([7]))
            try await cache.close()
        }
        #expect(calls.value == 2, "both results, nil included, were served from SQLite after the restart")

        // From memory too: a nil hit is a hit.
        let cache = try await makeCache(in: directory, file: "memory.sqlite")
        let lookup = cache.memoize(id: "lookup") { (name: String) async throws -> String? in
            calls.increment()
            return nil
        }
        #expect(try await lookup("x") == nil)
        #expect(try await lookup("x") == nil)
        #expect(calls.value == 3)
        #expect(cache.statistics.memory.hits == 1)
        try await cache.close()
    }
}
