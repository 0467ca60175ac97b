import Foundation
import Testing

@testable import Panza

struct MemoizeKeyTests {
    struct Query: Codable, Sendable {
        var city: String
        var days: Int
        var units: String?
        var tags: Set<String>
    }

    /// The same fields as `Query`, declared in another order.
    struct ReorderedQuery: Codable, Sendable {
        var tags: Set<String>
        var units: String?
        var days: Int
        var city: String
    }

    enum Model: String, Codable, Sendable { case small, large }

    struct Point: Codable, Hashable, Sendable {
        var x: Int
        var y: Int
    }

    /// Named argument lists; their keys are pinned in `Fixtures/memoize-keys.json`.
    static let cases: [(name: String, key: @Sendable () throws -> CacheKey)] = [
        ("no-arguments", { try MemoizeKey.make(id: "f") }),
        ("string-int", { try MemoizeKey.make(id: "forecast", arguments: "Oslo", 3) }),
        ("int-widths", { try MemoizeKey.make(id: "f", arguments: Int8(3), Int32(3), UInt64(3)) }),
        ("large-unsigned", { try MemoizeKey.make(id: "f", arguments: UInt64.max) }),
        ("doubles", { try MemoizeKey.make(id: "f", arguments: 0.1, -0.0, Double.nan, Float(1.5)) }),
        ("bool-nil", { try MemoizeKey.make(id: "f", arguments: true, String?.none) }),
        ("unicode", { try MemoizeKey.make(id: "f", arguments: "Zürich ☃︎ 東京") }),
        ("data", { try MemoizeKey.make(id: "f", arguments: Data([0, 1, 2, 255])) }),
        ("array", { try MemoizeKey.make(id: "f", arguments: [3, 1, 2]) }),
        ("dictionary", { try MemoizeKey.make(id: "f", arguments: ["b": 2, "a": 1, "c": 3]) }),
        ("int-keyed-dictionary", { try MemoizeKey.make(id: "f", arguments: [3: "c", 1: "a", 2: "b"]) }),
        (
            "struct-keyed-dictionary",
            { try MemoizeKey.make(id: "f", arguments: [Point(x: 1, y: 2): "a", Point(x: 0, y: 5): "b"]) }
        ),
        ("set", { try MemoizeKey.make(id: "f", arguments: Set(["pear", "apple", "fig"])) }),
        (
            "struct",
            {
                try MemoizeKey.make(
                    id: "llm", arguments: Query(city: "Oslo", days: 3, units: "metric", tags: ["x", "y"]))
            }
        ),
        ("enum-and-nested", { try MemoizeKey.make(id: "llm", arguments: Model.large, [["k": [1, 2]], ["j": []]]) }),
        ("custom-key-function", { try MemoizeKey.make(id: "user", customKey: "user-7") }),
        ("raw-key-function", { try MemoizeKey.make(id: "user", rawKey: "user-7") }),
    ]

    @Test("Keys match the pinned fixtures, so stored entries stay reachable across releases")
    func fixtures() throws {
        let url = Fixtures.url("memoize-keys.json")
        var computed: [String: String] = [:]
        for item in Self.cases { computed[item.name] = try item.key().rawValue }
        if Fixtures.regenerate {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            try encoder.encode(computed).write(to: url)
        }
        let pinned = try JSONDecoder().decode([String: String].self, from: Data(contentsOf: url))
        #expect(pinned.count == Self.cases.count)
        for item in Self.cases {
            #expect(computed[item.name] == pinned[item.name], "key of \(item.name) changed")
        }
    }

    @Test("Keys have the {id}/{sha256} layout")
    func layout() throws {
        let key = try MemoizeKey.make(id: "forecast", arguments: "Oslo", 3)
        #expect(key.namespace == "forecast")
        #expect(key.rawValue.hasPrefix("forecast/"))
        let hash = key.rawValue.dropFirst("forecast/".count)
        #expect(hash.count == 64 && hash.allSatisfy { $0.isHexDigit && !$0.isUppercase })
    }

    @Test("Dictionary and Set order, and struct field order, do not change keys")
    func orderIndependence() throws {
        // Build equal collections with different insertion histories (and so different layouts).
        var forward: [String: Int] = [:]
        var backward: [String: Int] = [:]
        let names = (0..<200).map { "key\($0)" }
        for (index, name) in names.enumerated() { forward[name] = index }
        for (index, name) in names.enumerated().reversed() { backward[name] = index }
        #expect(try MemoizeKey.make(id: "f", arguments: forward) == MemoizeKey.make(id: "f", arguments: backward))

        var small = Set<String>(minimumCapacity: 1)
        var large = Set<String>(minimumCapacity: 4096)
        for name in names { small.insert(name) }
        for name in names.reversed() { large.insert(name) }
        #expect(Array(small) != Array(large), "the sets iterate in the same order; the test proves nothing")
        #expect(try MemoizeKey.make(id: "f", arguments: small) == MemoizeKey.make(id: "f", arguments: large))

        let query = Query(city: "Oslo", days: 3, units: nil, tags: ["a", "b"])
        let reordered = ReorderedQuery(tags: ["b", "a"], units: nil, days: 3, city: "Oslo")
        #expect(try MemoizeKey.make(id: "f", arguments: query) == MemoizeKey.make(id: "f", arguments: reordered))
    }

    @Test("Different arguments, ids and argument boundaries give different keys")
    func distinctness() throws {
        let keys = try [
            MemoizeKey.make(id: "f", arguments: "ab", "c"),
            MemoizeKey.make(id: "f", arguments: "a", "bc"),
            MemoizeKey.make(id: "g", arguments: "ab", "c"),
            MemoizeKey.make(id: "f", arguments: ["ab", "c"]),
            MemoizeKey.make(id: "f", arguments: 1),
            MemoizeKey.make(id: "f", arguments: 1.0),
            MemoizeKey.make(id: "f", arguments: "1"),
            MemoizeKey.make(id: "f", arguments: true),
        ]
        #expect(Set(keys.map(\.rawValue)).count == keys.count)
    }

    @Test("The fast path for primitives gives the same bytes as the Encoder path")
    func fastPathAgreesWithEncoder() throws {
        struct Wrapped<T: Encodable>: Encodable {
            var value: T
            func encode(to encoder: any Encoder) throws {
                var container = encoder.singleValueContainer()
                try container.encode(self.value)
            }
        }
        func bytes(_ value: some Encodable) throws -> [UInt8] {
            var encoder = CanonicalEncoder()
            try encoder.append(value)
            return encoder.bytes
        }
        #expect(try bytes("Oslo") == bytes(Wrapped(value: "Oslo")))
        #expect(try bytes(42) == bytes(Wrapped(value: 42)))
        #expect(try bytes(true) == bytes(Wrapped(value: true)))
        #expect(try bytes(2.5) == bytes(Wrapped(value: 2.5)))
        #expect(try bytes(Int64(42)) == bytes(42))
    }

    /// The persistent key computed as a memoized call computes it on a memory miss: from the
    /// function's prefix and the arguments' bytes in its fast key.
    func fastPathKey<each Argument: Encodable>(id: String, _ argument: repeat each Argument) throws -> CacheKey {
        var count = 0
        for _ in repeat each argument { count += 1 }
        var builder = MemoryFastKey.Builder()
        for value in repeat each argument { try builder.append(value) }
        let prefix = MemoizeKey.canonicalPrefix(id: id, argumentCount: count)
        return MemoizeKey.key(id: id, prefix: prefix, arguments: builder.key(function: 7))
    }

    @Test(
        "A call's key from its fast key is the key MemoizeKey.make gives, inline or spilled, for every kind of argument"
    )
    func fastKeyGivesPersistentKey() throws {
        #expect(
            try self.fastPathKey(id: "forecast", "Oslo", 3) == MemoizeKey.make(id: "forecast", arguments: "Oslo", 3))
        #expect(try self.fastPathKey(id: "f") == MemoizeKey.make(id: "f"))
        // Across the inline capacity: a string of n bytes takes 5 + n.
        for length in 0...80 {
            let text = String(repeating: "é", count: length / 2) + String(repeating: "x", count: length % 2)
            #expect(try self.fastPathKey(id: "f", text, 1) == MemoizeKey.make(id: "f", arguments: text, 1))
            #expect(try self.fastPathKey(id: "f", 1, text) == MemoizeKey.make(id: "f", arguments: 1, text))
        }
        let query = Query(city: "Oslo", days: 3, units: nil, tags: ["a", "b"])
        #expect(
            try self.fastPathKey(id: "llm", "short", query) == MemoizeKey.make(id: "llm", arguments: "short", query))
        #expect(
            try self.fastPathKey(id: "f", true, -0.0, Double.nan, Data([0, 1, 2]), ["b": 2, "a": 1], Model.small)
                == MemoizeKey.make(
                    id: "f", arguments: true, -0.0, Double.nan, Data([0, 1, 2]), ["b": 2, "a": 1], Model.small)
        )
        #expect(try self.fastPathKey(id: "f", "ab", "c") != self.fastPathKey(id: "f", "a", "bc"))
    }

    @Test(
        "Fast keys: equal bytes give equal keys and hashes however they were built; functions and bytes tell keys apart"
    )
    func fastKeyIdentity() throws {
        for length in [0, 1, 47, 48, 49, 64, 200] {
            let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
            let whole = MemoryFastKey(function: 3, bytes: bytes)
            var builder = MemoryFastKey.Builder()
            for byte in bytes { builder.append(byte) }
            let byteByByte = builder.key(function: 3)
            #expect(whole == byteByByte)
            #expect(whole.hash == byteByByte.hash)
            #expect(whole.count == length)
            #expect((whole.spilled != nil) == (length > MemoryFastKey.inlineCapacity), "\(length) bytes")
            #expect(whole.withBytes { Array($0) } == bytes)
            #expect(whole != MemoryFastKey(function: 4, bytes: bytes))
            if length > 0 {
                var changed = bytes
                changed[length - 1] ^= 1
                #expect(whole != MemoryFastKey(function: 3, bytes: changed))
            }
        }
        // A trailing zero byte is a byte: the inline words are zero past the count.
        #expect(MemoryFastKey(function: 0, bytes: [1]) != MemoryFastKey(function: 0, bytes: [1, 0]))
    }

    @Test(
        "Memoize ids: '/', '.', '..' and a leading '_' (reserved for plain keys' '_keys/') are refused",
        arguments: [
            ("forecast", true), ("a.b", true), ("x_y", true), ("", false), ("a/b", false), (".", false), ("..", false),
            ("_keys", false), ("_anything", false), (String(repeating: "i", count: 201), false),
        ])
    func memoizeIDs(id: String, valid: Bool) {
        #expect(TieredCache.isValidID(id) == valid)
    }
}
