import Synchronization
import Testing

@testable import Panza

/// The wiring of a remote tier below SQLite, with an in-memory stand-in for S3. `PanzaS3Tests`
/// runs the same behaviours against a real S3 server.
@Suite(.timeLimit(.minutes(1)))
struct RemoteTierTests {
    let directory: TemporaryDirectory

    init() throws {
        self.directory = try TemporaryDirectory()
    }

    func cache(_ remote: RecordingTier, file: String = "cache.sqlite") async throws -> TieredCache {
        try await makeCache(in: self.directory, file: file) {
            $0.remote = remote
            $0.remoteCloseTimeout = .milliseconds(200)
        }
    }

    func outboxCount(_ cache: TieredCache) async throws -> Int {
        try await (cache.tiers.first as! SQLiteTier).outboxCount()
    }

    @Test("Writes reach the remote tier through the outbox; flush waits for them")
    func uploads() async throws {
        let remote = RecordingTier()
        let cache = try await self.cache(remote)
        for index in 0..<50 { try await cache.set("v\(index)", forKey: "k\(index)") }
        try await cache.flush()
        #expect(remote.keys.count == 50)
        #expect(try await self.outboxCount(cache) == 0)
        try await cache.close()
    }

    @Test("A second machine is served from the remote tier without calling its loader, and fills its own tiers")
    func sharing() async throws {
        let remote = RecordingTier()
        let first = try await self.cache(remote, file: "first.sqlite")
        let f1 = first.memoize(id: "f") { (x: Int) async throws -> Int in x * 10 }
        #expect(try await f1(4) == 40)
        try await first.flush()
        try await first.close()

        let second = try await self.cache(remote, file: "second.sqlite")
        let calls = CallCounter()
        let f2 = second.memoize(id: "f") { (x: Int) async throws -> Int in
            calls.increment()
            return -1
        }
        #expect(try await f2(4) == 40)
        #expect(calls.value == 0)
        #expect(second.statistics.tiers["remote"]?.hits == 1)
        try await second.flush()
        #expect(try await self.outboxCount(second) == 0, "a fill from the remote was uploaded again")
        let sqlite = try #require(second.tiers.first as? SQLiteTier)
        #expect(try await sqlite.entries(namespace: "f").count == 1)
        try await second.close()
    }

    @Test("When the remote is down, callers are served locally, uploads wait in the outbox, and flush reports it")
    func remoteDown() async throws {
        let remote = RecordingTier()
        remote.failing = true
        let cache = try await self.cache(remote)
        try await cache.set("v", forKey: "k")
        #expect(try await cache.value(forKey: "k", as: String.self) == "v")
        #expect(try await cache.value(forKey: "missing") { "loaded" } == "loaded")
        await #expect(throws: TestError.self) { try await cache.flush() }
        #expect(try await self.outboxCount(cache) == 2)
        remote.failing = false
        try await cache.flush()
        #expect(remote.keys == ["k", "missing"])
        try await cache.close()
    }

    @Test("Uploads pending at close are sent by the next cache that opens the file")
    func resumeAfterRestart() async throws {
        let remote = RecordingTier()
        remote.failing = true
        let cache = try await self.cache(remote)
        try await cache.set("v", forKey: "k")
        try await cache.close()  // gives up on the upload after remoteCloseTimeout
        #expect(remote.keys.isEmpty)

        remote.failing = false
        let reopened = try await self.cache(remote)
        try await reopened.flush()
        #expect(remote.keys == ["k"])
        try await reopened.close()
    }

    @Test("bust and bustAll reach the remote, and a pending removal hides the remote copy")
    func busting() async throws {
        let remote = RecordingTier()
        let cache = try await self.cache(remote)
        let f = cache.memoize(id: "f") { (x: Int) async throws -> Int in x }
        _ = try await f(1)
        _ = try await f(2)
        try await cache.flush()
        #expect(remote.keys.count == 2)

        remote.failing = true
        try await f.bust(1)
        remote.failing = false  // reads work again, but the deletion is not sent yet
        #expect(try await f.peek(1) == nil, "the remote copy came back before the deletion reached it")
        try await cache.flush()
        #expect(remote.keys.count == 1)
        try await f.bustAll()
        try await cache.flush()
        #expect(remote.keys.isEmpty)
        try await cache.close()
    }

    @Test("A read-only remote is read but never written; a write-only remote is written but never read")
    func policies() async throws {
        let readOnly = RecordingTier(writable: false)
        readOnly.state.withLock {
            $0.blobs["shared"] = (
                "",
                BlobEnvelope(contentType: .text, payload: Array("from remote".utf8), createdAtMilliseconds: 1).encoded()
            )
        }
        let cache = try await self.cache(readOnly, file: "read-only.sqlite")
        try await cache.set("local", forKey: "mine")
        try await cache.flush()
        #expect(readOnly.keys == ["shared"])
        #expect(try await cache.value(forKey: "shared", as: String.self) == "from remote")
        let sqlite = try #require(cache.tiers.first as? SQLiteTier)
        #expect(try await sqlite.storedBlob(forKey: "mine") != nil, "local tiers were not written")
        try await cache.close()

        let writeOnly = RecordingTier(readable: false)
        let second = try await self.cache(writeOnly, file: "write-only.sqlite")
        try await second.set("v", forKey: "k")
        try await second.flush()
        #expect(writeOnly.keys == ["k"])
        #expect(try await second.value(forKey: "absent", as: String.self) == nil)
        #expect(writeOnly.reads == 0)
        try await second.close()
    }

    @Test("A remote tier that never answers costs a miss one read timeout, then nothing once the breaker opens")
    func hangingRemote() async throws {
        let remote = RecordingTier()
        remote.state.withLock { $0.readGate = Gate() }  // reads never return
        let cache = try await makeCache(in: self.directory) {
            $0.remote = remote
            $0.remoteReadTimeout = .milliseconds(100)
            $0.remoteBreaker = .init(failureThreshold: 3, openDuration: .seconds(60))
            $0.closeTimeout = .seconds(1)
        }
        for index in 0..<3 {
            // The read never returns: the loader answered because the read timeout cut the wait.
            #expect(try await cache.value(forKey: "k\(index)") { "loaded" } == "loaded")
            #expect(cache.statistics.tiers["remote"]?.timeouts == index + 1, "a miss waited for the hanging tier")
        }
        #expect(cache.statistics.tiers["remote"]?.timeouts == 3)
        #expect(cache.statistics.tiers["remote"]?.breaker == .open)
        let readsBefore = remote.state.withLock { $0.readsStarted }
        for index in 3..<20 {
            #expect(try await cache.value(forKey: "k\(index)") { "loaded" } == "loaded")
        }
        #expect(remote.state.withLock { $0.readsStarted } == readsBefore, "the open breaker let reads through")
        #expect(cache.statistics.tiers["remote"]?.skipped == 17)
        // Local hits are unaffected.
        #expect(try await cache.value(forKey: "k0", as: String.self) == "loaded")
        try? await cache.close()
    }

    @Test("In strict mode a read timeout reaches the caller as a typed error")
    func strictTimeout() async throws {
        final class StrictTier: CacheTier, Sendable {
            let name = "remote"
            let failuresReachCallers = true
            func blob(forKey key: CacheKey) async throws -> [UInt8]? {
                await Gate().wait()
                return nil
            }
            func apply(_ operations: [CacheTierOperation]) async throws {}
            func close() async throws {}
        }
        let cache = try await makeCache(in: self.directory, sqlite: false) {
            $0.remote = StrictTier()
            $0.remoteReadTimeout = .milliseconds(50)
        }
        await #expect { _ = try await cache.value(forKey: "k", as: String.self) } throws: {
            ($0 as? PanzaError)?.code == .timedOut
        }
        try? await cache.close()
    }

    /// A valid envelope (checksum recomputed) whose header claims `claimed` payload bytes.
    static func hostileEnvelope(claiming claimed: UInt32) -> [UInt8] {
        var bytes = BlobEnvelope(
            contentType: .text,
            payload: Array(repeating: UInt8(ascii: "a"), count: 4096),
            createdAtMilliseconds: 1
        ).encoded()
        withUnsafeBytes(of: claimed.littleEndian) { bytes.replaceSubrange(12..<16, with: $0) }
        let end = bytes.count - 8
        let checksum = XXHash64.hash(bytes[0..<end])
        withUnsafeBytes(of: checksum.littleEndian) { bytes.replaceSubrange(end..<bytes.count, with: $0) }
        return bytes
    }

    @Test(
        "An envelope from the bucket that claims more than maxValueBytes is refused before allocating, and left there")
    func hostileLength() async throws {
        let hostile = Self.hostileEnvelope(claiming: 512 << 20)
        #expect(throws: PanzaError.self) { try BlobEnvelope.decode(hostile, maxPayloadBytes: 1 << 20) }
        let remote = RecordingTier()
        remote.state.withLock { $0.blobs["k"] = ("", hostile) }
        let cache = try await makeCache(in: self.directory, sqlite: false) {
            $0.remote = remote
            $0.maxValueBytes = 1 << 20
        }
        #expect(try await cache.value(forKey: "k", as: String.self) == nil)
        #expect(cache.statistics.corruptBlobs == 1)
        try await cache.flush()
        #expect(remote.keys == ["k"], "a reader deleted a shared object it could not accept")
        try await cache.close()
    }

    @Test("A reader never deletes a shared object it cannot decode; a damaged local copy is removed")
    func damagedSharedObjectLeftAlone() async throws {
        let remote = RecordingTier()
        var damaged = BlobEnvelope(contentType: .text, payload: Array("v".utf8), createdAtMilliseconds: 1).encoded()
        damaged[damaged.count - 1] ^= 0xFF
        remote.state.withLock { $0.blobs["k"] = ("", damaged) }
        let cache = try await makeCache(in: self.directory, sqlite: false) { $0.remote = remote }
        #expect(try await cache.value(forKey: "k", as: String.self) == nil)
        try await cache.flush()
        #expect(remote.keys == ["k"])
        #expect(remote.state.withLock { $0.appliedOperations } == 0)
        try await cache.close()
    }

    @Test(
        "The memory tier charges entries their decoded size: a value that compresses well cannot exceed its bytes bound"
    )
    func memoryChargesDecodedSize() async throws {
        let big = String(repeating: "a", count: 1 << 20)
        let compressed = BlobEnvelope(contentType: .text, payload: Array(big.utf8), createdAtMilliseconds: 1).encoded(
            compress: true)
        #expect(compressed.count < 64 << 10, "the fixture must compress well")
        let remote = RecordingTier()
        remote.state.withLock { $0.blobs["big"] = ("", compressed) }
        let cache = try await makeCache(in: self.directory, sqlite: false) {
            $0.remote = remote
            $0.memory = .init(maxEntries: 100, maxBytes: 512 << 10, maxEntryBytes: 512 << 10)
        }
        #expect(try await cache.value(forKey: "big", as: String.self) == big)
        #expect(cache.statistics.memoryBytes == 0, "a 1 MiB value was charged its compressed size")
        let small = String(repeating: "b", count: 100 << 10)
        try await cache.set(small, forKey: "small")
        #expect(cache.statistics.memoryBytes >= 100 << 10)
        try await cache.close()
    }

    @Test("A remote tier slower than the loads is skipped after a few reads; one faster than the loads stays in use")
    func slowerThanLoads() async throws {
        // The slow tier answers in 500 ms against 1 ms loads; the fast one in 20 ms against 1 s
        // loads: margins wide enough that a loaded machine's late wake-ups cannot turn the fast one
        // slow, nor (through a load that woke up 100 ms late and raised the loads' average) the slow
        // one fast, as a CI run did with 100 ms reads.
        let cases: [(readDelay: Duration, loadTime: Duration, stays: Bool)] = [
            (.milliseconds(500), .milliseconds(1), false), (.milliseconds(20), .seconds(1), true),
        ]
        for (readDelay, loadTime, stays) in cases {
            let remote = RecordingTier()
            remote.state.withLock { $0.readDelay = readDelay }
            let cache = try await makeCache(in: self.directory, sqlite: false) {
                $0.remote = remote
                $0.remoteReadTimeout = .seconds(5)
                $0.remoteBreaker = .init(failureThreshold: 3, openDuration: .seconds(60))
                $0.remoteBreaker.skipsTiersSlowerThanLoads = true
            }
            for index in 0..<5 {
                _ = try await cache.value(forKey: "k\(index)") {
                    try await Task.sleep(for: loadTime)
                    return index
                }
            }
            let counts = try #require(cache.statistics.tiers["remote"])
            if stays {
                #expect(counts.breaker == .closed, "S3 faster than the API must stay in use")
                #expect(counts.slow == 0 && counts.skipped == 0)
            } else {
                #expect(counts.slow == 3, "the first read precedes any load; the next three are slower than loads")
                #expect(counts.breaker == .open)
                #expect(counts.skipped == 1)
            }
            try await cache.close()
        }
    }
}
