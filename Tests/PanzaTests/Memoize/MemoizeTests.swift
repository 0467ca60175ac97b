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

    @Test("peek never calls the function")
    func peek() async throws {
        let cache = try await makeCache(in: self.directory)
        let calls = CallCounter()
        let square = cache.memoize(id: "square") { (x: Int) async throws -> Int in calls.increment(); return x * x }
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
        let square = cache.memoize(id: "square") { (x: Int) async throws -> Int in calls.increment(); return x * x }
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

    @Test("A custom key function replaces argument hashing")
    func customKey() async throws {
        let cache = try await makeCache(in: self.directory)
        let calls = CallCounter()
        let lookup = cache.memoize(id: "user", key: { (id: Int, _: String) in "user-\(id)" }) { (id: Int, traceID: String) async throws -> String in
            calls.increment()
            return "user \(id)"
        }
        #expect(try await lookup(7, "trace-a") == "user 7")
        #expect(try await lookup(7, "trace-b") == "user 7")  // the trace id is not part of the key
        #expect(calls.value == 1)
        #expect(try lookup.key(7, "x").rawValue == "user/user-7")
        try await cache.close()
    }

    @Test("Memoized results survive a new cache on the same file")
    func persistence() async throws {
        let calls = CallCounter()
        for _ in 0..<2 {
            let cache = try await makeCache(in: self.directory)
            let f = cache.memoize(id: "f") { (x: Int) async throws -> Int in calls.increment(); return x + 1 }
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
        let f = cache.memoize(id: "f") { (x: Int) async throws -> Int in calls.increment(); return x }
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
        let g = cache.memoize(id: "g") { (x: Int) async throws -> Int in gCalls.increment(); return x }
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
        let cache = try await makeCache(in: self.directory) { $0.modes = .fromEnvironment(["BUST_CACHE": "all"]) }
        let calls = CallCounter()
        let f = cache.memoize(id: "f") { (x: Int) async throws -> Int in calls.increment(); return x }
        _ = try await f(1)
        _ = try await f(1)
        #expect(calls.value == 2)
        try await cache.close()
    }

    @Test("Modes are parsed from the environment")
    func environmentParsing() {
        let modes = CacheModes.fromEnvironment(["BUST_CACHE": " f, g ,", "CACHE_ONLY": "true", "PRINT_CACHE_MISSES": "1"])
        #expect(modes.bust == .ids(["f", "g"]))
        #expect(modes.cacheOnly)
        #expect(modes.printMisses)
        let none = CacheModes.fromEnvironment(["CACHE_ONLY": "0", "BUST_CACHE": ""])
        #expect(none == CacheModes())
        #expect(CacheModes.fromEnvironment(["BUST_CACHE": "f,all"]).bust == .all)
    }
}
