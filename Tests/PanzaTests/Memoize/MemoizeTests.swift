import Foundation
import Testing

@testable import Panza

struct MemoizeTests {
    let directory: TemporaryDirectory

    init() throws {
        self.directory = try TemporaryDirectory()
    }

    @Test("A memoized function runs once per distinct arguments")
    func memoizes() async throws {
        let cache = try await makeCache(in: self.directory)
        let calls = CallCounter()
        let forecast = cache.memoize(id: "forecast") { (city: String, days: Int) async throws -> Forecast in
            calls.increment()
            return Forecast(city: city, days: days, temperatures: [Double(days)])
        }
        #expect(try await forecast("Oslo", 3) == Forecast(city: "Oslo", days: 3, temperatures: [3]))
        #expect(try await forecast("Oslo", 3).city == "Oslo")
        #expect(try await forecast("Oslo", 4).days == 4)
        #expect(calls.value == 2)
        try await cache.close()
    }

    @Test("Memory hits by canonical arguments never outlive a bust, a bustAll, a set of the key or an eviction")
    func fastMemoryHitsFollowWrites() async throws {
        let cache = try await makeCache(in: self.directory, memory: .init(maxEntries: 3, maxBytes: 1 << 20)) {
            $0.sqlite = nil
        }
        let calls = CallCounter()
        let f = cache.memoize(id: "f") { (x: Int) async throws -> String in "\(x)#\(calls.increment())" }
        #expect(try await f(1) == "1#1")
        #expect(try await f(1) == "1#1")  // found by its persistent key, then attached
        #expect(try await f(1) == "1#1")  // found by its canonical arguments
        try await f.bust(1)
        #expect(try await f(1) == "1#2")
        #expect(try await f(1) == "1#2")
        try await f.bustAll()
        #expect(try await f(1) == "1#3")
        #expect(try await f(1) == "1#3")
        try await cache.set("replaced", forKey: try f.key(1).rawValue)
        #expect(try await f(1) == "replaced")
        #expect(try await f(1) == "replaced")
        try await cache.bustAll()
        #expect(try await f(1) == "1#4")
        #expect(try await f(1) == "1#4")
        // Three other keys evict it from a memory tier of three entries.
        for x in 2...4 { _ = try await f(x) }
        #expect(try await f(1) == "1#8")
        let statistics = cache.statistics
        #expect(statistics.memory.hits == 7)
        try await cache.close()
    }

    @Test("Two wrappers of one id share their calls' entries in memory; another id with the same arguments does not")
    func fastKeysFollowTheID() async throws {
        let cache = try await makeCache(in: self.directory) { $0.sqlite = nil }
        let calls = CallCounter()
        let first = cache.memoize(id: "f") { (x: Int) async throws -> String in "f\(x)#\(calls.increment())" }
        let second = cache.memoize(id: "f") { (x: Int) async throws -> String in "f\(x)#\(calls.increment())" }
        let other = cache.memoize(id: "g") { (x: Int) async throws -> String in "g\(x)#\(calls.increment())" }
        #expect(try await first(1) == "f1#1")
        #expect(try await first(1) == "f1#1")  // attaches the fast key
        #expect(try await second(1) == "f1#1")
        #expect(try await other(1) == "g1#2")
        #expect(try await other(1) == "g1#2")
        #expect(try await first(1) == "f1#1")
        #expect(first.fastKeyFunction == second.fastKeyFunction)
        #expect(first.fastKeyFunction != other.fastKeyFunction)
        #expect(calls.value == 2)
        try await cache.close()
    }

    @Test("peek never calls the function")
    func peek() async throws {
        let cache = try await makeCache(in: self.directory)
        let calls = CallCounter()
        let square = cache.memoize(id: "square") { (x: Int) async throws -> Int in
            calls.increment()
            return x * x
        }
        #expect(try await square.peek(4) == nil)
        #expect(try await square(4) == 16)
        #expect(try await square.peek(4) == 16)
        #expect(calls.value == 1)
        try await cache.close()
    }

    @Test("bust forgets one call and bustAll every call of the id, in every tier")
    func bust() async throws {
        let cache = try await makeCache(in: self.directory)
        let calls = CallCounter()
        let square = cache.memoize(id: "square") { (x: Int) async throws -> Int in
            calls.increment()
            return x * x
        }
        let cube = cache.memoize(id: "cube") { (x: Int) async throws -> Int in x * x * x }
        _ = try await square(2)
        _ = try await square(3)
        _ = try await cube(2)
        try await square.bust(2)
        #expect(try await square.peek(2) == nil)
        #expect(try await square.peek(3) == 9)
        try await square.bustAll()
        #expect(try await square.peek(3) == nil)
        #expect(try await cube.peek(2) == 8)
        try await cache.close()

        let reopened = try await makeCache(in: self.directory)
        let tier = try #require(reopened.tiers.first as? SQLiteTier)
        #expect(try await tier.entries(namespace: "square").isEmpty)
        #expect(try await tier.entries(namespace: "cube").count == 1)
        try await reopened.close()
    }

    @Test("A custom key function replaces argument hashing; its output is hashed with SHA-256, as Python panza does")
    func customKey() async throws {
        let cache = try await makeCache(in: self.directory)
        let calls = CallCounter()
        let lookup = cache.memoize(id: "user", key: { (id: Int, _: String) in "user-\(id)" }) {
            (id: Int, traceID: String) async throws -> String in
            calls.increment()
            return "user \(id)"
        }
        #expect(try await lookup(7, "trace-a") == "user 7")
        #expect(try await lookup(7, "trace-b") == "user 7")  // the trace id is not part of the key
        #expect(calls.value == 1)
        // hashlib.sha256(b"user-7").hexdigest()
        #expect(
            try lookup.key(7, "x").rawValue == "user/092081140b677b45dbe983b2f0d4ae0259ff2945bfa82f996fd7f6cac6916862")
        try await cache.close()
    }

    @Test("A key function may return a whole 5,000-byte prompt: it is hashed, and the result is cached")
    func longCustomKey() async throws {
        let cache = try await makeCache(in: self.directory)
        let calls = CallCounter()
        let summarize = cache.memoize(id: "llm", key: { (text: String) in "Summarize: " + text }) {
            (text: String) async throws -> String in
            calls.increment()
            return "summary of \(text.count) characters"
        }
        let prompt = String(repeating: "x", count: 5_000)
        #expect(try await summarize(prompt) == "summary of 5000 characters")
        #expect(try await summarize(prompt) == "summary of 5000 characters")
        #expect(calls.value == 1)
        // hashlib.sha256(("Summarize: " + "x" * 5000).encode()).hexdigest()
        #expect(
            try summarize.key(prompt).rawValue == "llm/0bff6d020b1702fd085b147533902cf05bd4d386855cc37486deba2a02eb06f6"
        )
        try await cache.close()
        let reopened = try await makeCache(in: self.directory)
        let again = reopened.memoize(id: "llm", key: { (text: String) in "Summarize: " + text }) {
            (text: String) async throws -> String in
            calls.increment()
            return "recomputed"
        }
        #expect(try await again(prompt) == "summary of 5000 characters", "served from SQLite after a restart")
        try await reopened.close()
    }

    @Test("rawKey: keeps the key function's output as it is, within the key length limit")
    func rawKey() async throws {
        let cache = try await makeCache(in: self.directory)
        let lookup = cache.memoize(id: "user", rawKey: { (id: Int) in "user-\(id)" }) {
            (id: Int) async throws -> String in "user \(id)"
        }
        #expect(try await lookup(7) == "user 7")
        #expect(try lookup.key(7).rawValue == "user/user-7")
        let long = cache.memoize(id: "user", rawKey: { (text: String) in text }) {
            (text: String) async throws -> String in text
        }
        let error = try #require(throws: PanzaError.self) { _ = try long.key(String(repeating: "x", count: 5_000)) }
        #expect(error.code == .invalidKey)
        try await cache.close()
    }

    @Test("A result that cannot be stored reaches its caller, uncached and counted, and is logged once per id")
    func unstorableResult() async throws {
        let cache = try await makeCache(in: self.directory)
        let calls = CallCounter()
        let scores = cache.memoize(id: "scores") { (n: Int) async throws -> [Double] in
            calls.increment()
            return [1.0, .nan, Double(n)]
        }
        let first = try await scores(2)
        #expect(first.count == 3 && first[1].isNaN, "the NaN result reached the caller")
        _ = try await scores(2)
        #expect(calls.value == 2, "nothing was stored, so the second call runs again")
        #expect(cache.statistics.unstorableResults == 2)
        #expect(try await scores.peek(2) == nil)

        let big = try await makeCache(in: self.directory, file: "big.sqlite") { $0.maxValueBytes = 1_000 }
        let large = try await big.value(forKey: "large") { String(repeating: "y", count: 5_000) }
        #expect(large.count == 5_000)
        #expect(big.statistics.unstorableResults == 1)
        #expect(try await big.value(forKey: "large", as: String.self) == nil)
        try await big.close()
        try await cache.close()
    }

    @Test("Memoized results survive a new cache on the same file")
    func persistence() async throws {
        let calls = CallCounter()
        for _ in 0..<2 {
            let cache = try await makeCache(in: self.directory)
            let f = cache.memoize(id: "f") { (x: Int) async throws -> Int in
                calls.increment()
                return x + 1
            }
            #expect(try await f(41) == 42)
            try await cache.close()
        }
        #expect(calls.value == 1)
    }

    // MARK: Modes

    @Test("CACHE_ONLY: a miss throws cacheOnlyMiss naming the id and key; hits are served")
    func cacheOnly() async throws {
        let cache = try await makeCache(in: self.directory)
        let calls = CallCounter()
        let f = cache.memoize(id: "f") { (x: Int) async throws -> Int in
            calls.increment()
            return x
        }
        _ = try await f(1)
        cache.modes.cacheOnly = true
        #expect(try await f(1) == 1)
        let error = try await #require(throws: PanzaError.self) { try await f(2) }
        #expect(error.code == .cacheOnlyMiss)
        #expect(error.message.contains("'f'"))
        #expect(error.key == (try f.key(2).rawValue))
        #expect(calls.value == 1)
        try await cache.close()
    }

    @Test("BUST_CACHE with ids: those functions run again and overwrite; others are cached")
    func bustIDs() async throws {
        let cache = try await makeCache(in: self.directory)
        let fCalls = CallCounter()
        let gCalls = CallCounter()
        let f = cache.memoize(id: "f") { (x: Int) async throws -> Int in fCalls.increment() * 100 + x }
        let g = cache.memoize(id: "g") { (x: Int) async throws -> Int in
            gCalls.increment()
            return x
        }
        #expect(try await f(1) == 101)
        _ = try await g(1)
        cache.modes.bust = .ids(["f"])
        #expect(try await f(1) == 201)
        _ = try await g(1)
        #expect(gCalls.value == 1)
        cache.modes.bust = .none
        #expect(try await f(1) == 201, "the busted call did not overwrite the entry")
        #expect(fCalls.value == 2)
        try await cache.close()
    }

    @Test("BUST_CACHE=all busts every id")
    func bustAllMode() async throws {
        let cache = try await makeCache(in: self.directory) {
            $0.modes = CacheModes(environment: ["BUST_CACHE": "all"])
        }
        let calls = CallCounter()
        let f = cache.memoize(id: "f") { (x: Int) async throws -> Int in
            calls.increment()
            return x
        }
        _ = try await f(1)
        _ = try await f(1)
        #expect(calls.value == 2)
        try await cache.close()
    }

    @Test("Modes are parsed from the environment")
    func environmentParsing() {
        let modes = CacheModes(environment: [
            "BUST_CACHE": " f, g ,", "CACHE_ONLY": "true", "PRINT_CACHE_MISSES": "1",
        ])
        #expect(modes.bust == .ids(["f", "g"]))
        #expect(modes.cacheOnly)
        #expect(modes.printMisses)
        let none = CacheModes(environment: ["CACHE_ONLY": "0", "BUST_CACHE": ""])
        #expect(none == CacheModes())
        #expect(CacheModes(environment: ["BUST_CACHE": "f,all"]).bust == .all)
    }

    @Test(
        "As in Python panza, anything but an explicit false turns a mode on",
        arguments: [
            ("1", true), ("true", true), ("True", true), ("yes", true), ("on", true), ("2", true), ("enabled", true),
            ("0", false), ("false", false), ("FALSE", false), ("no", false), ("off", false), ("", false), ("  ", false),
        ])
    func flagValues(value: String, on: Bool) {
        let modes = CacheModes(environment: ["CACHE_ONLY": value, "PRINT_CACHE_MISSES": value, "BUST_CACHE": value])
        #expect(modes.cacheOnly == on)
        #expect(modes.printMisses == on)
        let everything = ["1", "true", "True", "yes", "on"].contains(value)
        #expect(modes.bust == (on ? (everything ? .all : .ids([value])) : .none))
    }

    @Test("TieredCache(path:) gives a memory and a SQLite tier with defaults, like Python panza's SQLiteCache")
    func pathConvenience() async throws {
        let path = self.directory.path("simple.sqlite")
        let cache = try await TieredCache(path: path)
        #expect(cache.tiers.count == 1 && cache.tiers.first is SQLiteTier)
        try await cache.set("v", forKey: "k")
        try await cache.close()
        let reopened = try await TieredCache(path: path)
        #expect(try await reopened.value(forKey: "k", as: String.self) == "v")
        try await reopened.close()
    }
}
