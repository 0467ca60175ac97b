import Foundation
import Synchronization
import Testing

@testable import Panza

/// One test per way the cache used to serve what it should not, or wedge: each failed before the
/// versioned write pipeline and passes with it.
@Suite(.timeLimit(.minutes(1)))
struct ConsistencyTests {
    let directory: TemporaryDirectory

    init() throws {
        self.directory = try TemporaryDirectory()
    }

    @Test("bustAll while another process holds the SQLite lock: once it returns, nothing busted is served")
    func bustAllWhileLocked() async throws {
        let path = self.directory.path("cache.sqlite")
        let cache = try await makeCache(in: self.directory)
        for index in 0..<20 { try await cache.set("old-\(index)", forKey: "k\(index)") }
        try await cache.flush()

        let holder = try ChildProcess.start(["hold-lock", path, "800"])
        #expect(await holder.waitForLine("locked"))
        let bust = Task { try await cache.bustAll() }
        // Reads made during the bust find memory empty and SQLite not yet changed.
        try await Task.sleep(for: .milliseconds(100))
        for index in 0..<20 { _ = try await cache.value(forKey: "k\(index)", as: String.self) }
        try await bust.value
        for index in 0..<20 {
            let value = try await cache.value(forKey: "k\(index)", as: String.self)
            #expect(value == nil, "k\(index) was served after bustAll returned: \(value ?? "")")
        }
        _ = try await holder.wait()
        try await cache.close()
    }

    @Test("A bust of one id, pending below, hides that id at once and only that id")
    func pendingNamespaceRemovalHides() async throws {
        let remote = RecordingTier()
        let cache = try await makeCache(in: self.directory, memory: nil, sqlite: false) { $0.remote = remote }
        let f = cache.memoize(id: "f") { (x: Int) async throws -> Int in x }
        let g = cache.memoize(id: "g") { (x: Int) async throws -> Int in x }
        _ = try await f(1)
        _ = try await g(1)
        try await cache.flush()
        let gate = Gate()
        let appliesBefore = remote.state.withLock { state in
            state.applyGate = gate
            return state.appliesStarted
        }
        let bust = Task { try await f.bustAll() }
        #expect(await eventually { remote.state.withLock { $0.appliesStarted } > appliesBefore })
        #expect(try await f.peek(1) == nil, "a pending bust of f let f's entry through")
        #expect(try await g.peek(1) == 1, "a pending bust of f hid g")
        gate.open()
        try await bust.value
        try await cache.close()
    }

    @Test(
        "A time to live of zero, below zero or below a millisecond never means forever",
        arguments: [
            Duration.zero, .milliseconds(-5), .microseconds(200),
        ]
    )
    func nonPositiveTimeToLive(timeToLive: Duration) async throws {
        let cache = try await makeCache(in: self.directory)
        try await cache.set("old", forKey: "k")
        try await cache.set("new", forKey: "k", timeToLive: timeToLive)
        try await cache.flush()
        try await Task.sleep(for: .milliseconds(20))
        let value = try await cache.value(forKey: "k", as: String.self)
        #expect(value == nil, "served \(value ?? "") after a time to live of \(timeToLive)")
        let sqlite = try #require(cache.tiers.first as? SQLiteTier)
        if timeToLive > .zero {
            let stored = try #require(try await sqlite.storedBlob(forKey: "k"))
            #expect(try BlobEnvelope.decode(stored).timeToLiveMilliseconds == 1)
        } else {
            #expect(try await sqlite.storedBlob(forKey: "k") == nil, "a value that must not be reused was stored")
        }
        // A loader whose result must not be reused runs every time, and its result is returned.
        let calls = CallCounter()
        for _ in 0..<3 {
            let loaded = try await cache.value(forKey: "loaded", timeToLive: .zero) { calls.increment() }
            #expect(loaded == calls.value)
        }
        #expect(calls.value == 3)
        try await cache.close()
    }

    @Test("A tier that refuses every write: set returns, close returns, the write is a dead letter")
    func refusingTier() async throws {
        let remote = RecordingTier()
        remote.failing = true
        let cache = try await makeCache(in: self.directory, sqlite: false) {
            $0.remote = remote
            $0.writeBehind.maxAttempts = 3
            $0.writeBehind.retryBackoff = .milliseconds(1)
        }
        try await cache.set("v", forKey: "k")
        try await cache.set("w", forKey: "l")
        // close() returned without closeTimedOut: the retries ended and the writes were dead-lettered
        // before the close timeout, not cut by it. (Not a wall-clock bound: a loaded CI machine was
        // seen taking 10.8 s for this; a hang would be caught by the suite's time limit.)
        try await cache.close()
        #expect(cache.statistics.droppedWrites == 2)
        #expect(cache.statistics.pendingWrites == 0)
    }

    @Test("A write the tier rejects for good goes to the dead letters at once; the writes behind it go on")
    func poisonOperation() async throws {
        let remote = RecordingTier()
        remote.state.withLock { $0.rejectedKeys = ["poison"] }
        let cache = try await makeCache(in: self.directory, sqlite: false) { $0.remote = remote }
        try await cache.set("bad", forKey: "poison")
        for index in 0..<10 { try await cache.set(index, forKey: "after-\(index)") }
        // Flushes made while the write was pending learn of the failure (the tier's error, then
        // the drop); once it is set aside, flushes succeed.
        await #expect(throws: (any Error).self) { try await cache.flush() }
        #expect(await eventually { (try? await cache.flush()) != nil })
        try await cache.flush()
        #expect(remote.keys == Set((0..<10).map { "after-\($0)" }))
        #expect(cache.statistics.droppedWrites == 1)
        try await cache.close()
    }

    @Test("A removal that goes to the dead letters keeps hiding the old value, until a newer write lands")
    func poisonedRemovalHides() async throws {
        let remote = RecordingTier()
        let cache = try await makeCache(in: self.directory, sqlite: false) { $0.remote = remote }
        try await cache.set("old", forKey: "k")
        try await cache.flush()
        remote.state.withLock { $0.rejectedRemovals = ["k"] }
        await #expect {
            try await cache.removeValue(forKey: "k")
        } throws: {
            ($0 as? PanzaError)?.code == .writeDropped
        }
        #expect(remote.keys == ["k"], "the tier still holds the old value")
        #expect(try await cache.value(forKey: "k", as: String.self) == nil, "the old value came back from the tier")
        remote.state.withLock { $0.rejectedRemovals = [] }
        try await cache.set("new", forKey: "k")
        try await cache.flush()
        cache.memory?.remove("k")
        #expect(try await cache.value(forKey: "k", as: String.self) == "new", "the newer value stayed hidden")
        try await cache.close()
    }

    @Test("close() returns within closeTimeout when a tier hangs, and says what was not applied")
    func boundedClose() async throws {
        let remote = RecordingTier()
        remote.state.withLock { $0.hangs = true }
        let cache = try await makeCache(in: self.directory, sqlite: false) {
            $0.remote = remote
            $0.closeTimeout = .milliseconds(300)
        }
        try await cache.set("v", forKey: "k")
        // The tier never returns: close() returning at all, with closeTimedOut, shows it is bounded
        // by closeTimeout (a hang would be caught by the suite's time limit; wall-clock bounds are
        // stretched by a loaded CI machine).
        await #expect {
            try await cache.close()
        } throws: { error in
            guard let error = error as? PanzaError, error.code == .closeTimedOut else { return false }
            return error.message.contains("1 for remote")
        }
    }

    @Test(
        "A fill from the remote tier that started before a set or a removeValue never overwrites it",
        arguments: [false, true]
    )
    func staleFillAfterWrite(removes: Bool) async throws {
        let remote = RecordingTier()
        let cache = try await makeCache(in: self.directory) { $0.remote = remote }
        try await cache.set("old", forKey: "k")
        try await cache.flush()
        try await self.evictLocally("k", from: cache)
        let gate = Gate()
        remote.state.withLock { $0.readGate = gate }
        let read = Task { try await cache.value(forKey: "k", as: String.self) }
        #expect(await eventually { remote.state.withLock { $0.readsStarted } == 1 })
        if removes {
            try await cache.removeValue(forKey: "k")
        } else {
            try await cache.set("new", forKey: "k")
        }
        gate.open()
        #expect(try await read.value == "old", "the slow read returns what it found, as a read before the write")
        remote.state.withLock { $0.readGate = nil }
        let expected = removes ? nil : "new"
        #expect(try await cache.value(forKey: "k", as: String.self) == expected, "the stale fill reached memory")
        try await cache.flush()
        let sqlite = try #require(cache.tiers.first as? SQLiteTier)
        let stored = try await sqlite.storedBlob(forKey: "k")
        let value = try stored.map { try ValueCoding.decode(String.self, from: BlobEnvelope.decode($0), key: "k") }
        #expect(value == expected, "the stale fill reached SQLite")
        #expect(remote.keys == (removes ? [] : ["k"]))
        try await cache.close()
    }

    @Test(
        "A fill by another cache on the same file never lands over a newer write of the key",
        arguments: [true, false]
    )
    func staleFillAcrossCaches(removes: Bool) async throws {
        let remote = RecordingTier()
        let writer = try await makeCache(in: self.directory) { $0.remote = remote }
        try await writer.set("old", forKey: "k")
        try await writer.flush()
        let reader = try await makeCache(in: self.directory, memory: nil) { $0.remote = remote }
        let sqlite = try #require(reader.tiers.first as? SQLiteTier)
        try await sqlite.apply([.remove(CacheKey(rawValue: "k"))])  // the reader's SQLite lookup misses
        let gate = Gate()
        remote.state.withLock { $0.readGate = gate }
        let read = Task { try await reader.value(forKey: "k", as: String.self) }
        #expect(await eventually { remote.state.withLock { $0.readsStarted } == 1 })
        if removes {
            try await writer.removeValue(forKey: "k")
        } else {
            try await writer.set("new", forKey: "k")
        }
        try await writer.flush()
        gate.open()
        #expect(try await read.value == "old")
        remote.state.withLock { $0.readGate = nil }
        try await reader.flush()
        let stored = try await sqlite.storedBlob(forKey: "k")
        if removes {
            #expect(stored == nil, "the other cache's fill brought the removed value back")
        } else {
            let value = try stored.map { try ValueCoding.decode(String.self, from: BlobEnvelope.decode($0), key: "k") }
            #expect(value == "new", "the other cache's fill overwrote the newer value")
        }
        try await reader.close()
        try await writer.close()
    }

    @Test("Two writers of one key under back-pressure leave memory and every tier agreeing")
    func writersUnderBackPressure() async throws {
        let remote = RecordingTier()
        let cache = try await makeCache(in: self.directory, sqlite: false) {
            $0.remote = remote
            $0.writeBehind.maxPendingWrites = 1
        }
        for round in 0..<30 {
            let gate = Gate()
            remote.state.withLock { $0.applyGate = gate }
            try await cache.set("first-\(round)", forKey: "k")  // claimed and held at the gate
            #expect(await eventually { remote.state.withLock { $0.appliesStarted } > round })
            async let a: Void = cache.set("a-\(round)", forKey: "k")
            async let b: Void = cache.set("b-\(round)", forKey: "k")
            try await Task.sleep(for: .milliseconds(1))
            remote.state.withLock { $0.applyGate = nil }
            gate.open()
            _ = try await (a, b)
            try await cache.flush()
            let inMemory = try await cache.value(forKey: "k", as: String.self)
            let stored = try #require(remote.storedBlob("k"))
            let inTier = try ValueCoding.decode(String.self, from: BlobEnvelope.decode(stored), key: "k")
            #expect(inMemory == inTier, "round \(round): memory has \(inMemory ?? "nil"), the tier \(inTier)")
        }
        try await cache.close()
    }

    @Test("The queues are bounded by bytes, and a writer waiting for room can be cancelled")
    func boundedByBytes() async throws {
        let remote = RecordingTier()
        let gate = Gate()
        remote.state.withLock { $0.applyGate = gate }
        let cache = try await makeCache(in: self.directory, sqlite: false) {
            $0.remote = remote
            $0.compression = false
            $0.writeBehind.maxPendingBytes = 16 << 10
        }
        let big = [UInt8](repeating: 7, count: 20 << 10)
        try await cache.set(big, forKey: "first")  // over the bound on its own: the queue is now full
        #expect(cache.statistics.pendingBytes > 16 << 10)
        let blocked = Task { try await cache.set(big, forKey: "second") }
        try await Task.sleep(for: .milliseconds(50))
        #expect(cache.statistics.pendingWrites == 1, "a writer got past a full queue")
        blocked.cancel()
        await #expect(throws: CancellationError.self) { try await blocked.value }
        gate.open()
        try await cache.flush()
        #expect(remote.keys == ["first"])
        try await cache.close()
    }

    @Test("Opening a database of another application changes nothing in it")
    func foreignDatabaseUntouched() async throws {
        let path = self.directory.path("foreign.sqlite")
        do {
            let connection = try SQLiteConnection(path: path, busyTimeoutMilliseconds: 100)
            try connection.execute("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('mine')")
            connection.close()
        }
        let before = try Data(contentsOf: URL(fileURLWithPath: path))
        await #expect {
            _ = try await SQLiteTier.open(configuration: .init(path: path))
        } throws: { ($0 as? PanzaError)?.code == .notAPanzaDatabase }
        let after = try Data(contentsOf: URL(fileURLWithPath: path))
        #expect(before == after, "the file changed (journal mode or header)")
        #expect(!FileManager.default.fileExists(atPath: path + "-wal"))
    }

    @Test("An outbox record of an unknown kind is a dead letter, never a removal of everything")
    func unknownOutboxKind() async throws {
        let remote = RecordingTier()
        let cache = try await makeCache(in: self.directory) { $0.remote = remote }
        try await cache.set("kept", forKey: "k")
        try await cache.flush()
        try await cache.close()
        do {
            let connection = try SQLiteConnection(
                path: self.directory.path("cache.sqlite"),
                busyTimeoutMilliseconds: 100
            )
            try connection.execute("INSERT INTO outbox (kind, created_at) VALUES (99, 0)")
            connection.close()
        }
        let reopened = try await makeCache(in: self.directory) { $0.remote = remote }
        try await reopened.set("later", forKey: "l")
        try await reopened.flush()
        #expect(remote.keys == ["k", "l"], "the unknown record removed entries")
        let sqlite = try #require(reopened.tiers.first as? SQLiteTier)
        let letters = try await sqlite.deadLetters()
        #expect(letters.count == 1)
        #expect(letters.first?.operation == "unknown(99)")
        try await reopened.close()
    }

    @Test("Every outbox lookup is an index probe, whatever the outbox holds")
    func outboxLookupsUseIndexes() async throws {
        let tier = try await SQLiteTier.open(configuration: .init(path: self.directory.path("cache.sqlite")))
        await tier.close()
        let connection = try SQLiteConnection(path: self.directory.path("cache.sqlite"), busyTimeoutMilliseconds: 100)
        defer { connection.close() }
        let queries: [StaticString] = [
            "EXPLAIN QUERY PLAN SELECT id, kind, blob FROM outbox WHERE key = 'k' ORDER BY id DESC LIMIT 1",
            "EXPLAIN QUERY PLAN SELECT max(id) FROM outbox WHERE kind = 2 AND namespace = 'n'",
            "EXPLAIN QUERY PLAN SELECT max(id) FROM outbox WHERE kind = 3",
            "EXPLAIN QUERY PLAN SELECT max(id) FROM dead_letter WHERE kind = 1 AND key = 'k'",
            "EXPLAIN QUERY PLAN SELECT max(id) FROM dead_letter WHERE kind = 2 AND namespace = 'n'",
            "EXPLAIN QUERY PLAN SELECT max(id) FROM dead_letter WHERE kind = 3",
        ]
        for query in queries {
            let statement = try connection.statement(query)
            var plan: [String] = []
            while try statement.step() { plan.append(statement.text(at: 3)) }
            statement.reset()
            #expect(!plan.contains { $0.hasPrefix("SCAN") }, "\(query): \(plan)")
        }
    }

    @Test("A reader of a closed tier throws instead of touching a closed connection")
    func readerAfterClose() async throws {
        let tier = try await SQLiteTier.open(configuration: .init(path: self.directory.path("cache.sqlite")))
        await tier.close()
        await #expect { _ = try await tier.blob(forKey: CacheKey(rawValue: "k")) } throws: {
            ($0 as? PanzaError)?.code == .closed
        }
    }

    /// Drops `key` from memory (a removal from memory only, as an eviction would) and from SQLite,
    /// so that the next read reaches the remote tier.
    private func evictLocally(_ key: String, from cache: TieredCache) async throws {
        cache.memory?.remove(key)
        let sqlite = try #require(cache.tiers.first as? SQLiteTier)
        try await sqlite.apply([.remove(CacheKey(rawValue: key))])
    }
}
