import Foundation
import Synchronization
import Testing

@testable import Panza

/// Edges of the caller's side of the API: optional results read back without a double optional,
/// and a cancelled caller that leads a remote read.
@Suite(.timeLimit(.minutes(1)))
struct CallerEdgeTests {
    let directory: TemporaryDirectory

    init() throws {
        self.directory = try TemporaryDirectory()
    }

    @Test("peek of a function with an optional result is one optional; isCached tells a cached nil from nothing")
    func peekOfOptionalResults() async throws {
        let cache = try await makeCache(in: self.directory)
        let calls = CallCounter()
        let find = cache.memoize(id: "find") { (name: String) async throws -> Int? in
            calls.increment()
            return name == "known" ? 42 : nil
        }
        // The declared type is the check: `Int?`, not `Int??`.
        let before: Int? = try await find.peek("known")
        #expect(before == nil)
        #expect(try await find.isCached("known") == false)
        #expect(try await find("known") == 42)
        #expect(try await find("unknown") == nil)
        let known: Int? = try await find.peek("known")
        let unknown: Int? = try await find.peek("unknown")
        #expect(known == 42)
        #expect(unknown == nil)
        #expect(try await find.isCached("unknown"), "a cached nil is cached")
        #expect(try await find.isCached("never") == false)
        #expect(try await find("unknown") == nil)
        #expect(calls.value == 2, "the cached nil is served, not reloaded")
        try await cache.close()
    }

    @Test(
        "A cancelled caller leading a remote read stops at once; a caller joined to it is served, and the breaker is not told"
    )
    func cancelledLeaderOfARemoteRead() async throws {
        let remote = RecordingTier()
        let gate = Gate()
        remote.state.withLock { $0.readGate = gate }
        let cache = try await makeCache(in: self.directory) {
            $0.remote = remote
            // Far longer than the test's time limit: a caller that waited for it would fail the test.
            $0.remoteReadTimeout = .seconds(300)
            $0.closeTimeout = .seconds(1)
            $0.remoteCloseTimeout = .milliseconds(100)
        }
        let leader = Task { try await cache.value(forKey: "k") { "leader" } }
        #expect(await eventually { remote.state.withLock { $0.readsStarted } == 1 })
        let follower = Task { try await cache.value(forKey: "k") { "follower" } }
        #expect(await eventually { cache.statistics.coalescedWaits == 1 })
        leader.cancel()
        await #expect(throws: CancellationError.self) { try await leader.value }
        // The follower starts over, leads, and reads again; the remote answers from now on.
        gate.open()
        #expect(try await follower.value == "follower")
        let remoteStatistics = cache.statistics.tiers["remote"]
        #expect(remoteStatistics?.errors == 0, "a cancelled read is not the tier's failure")
        #expect(remoteStatistics?.timeouts == 0)
        #expect(remoteStatistics?.breaker == .closed)
        try? await cache.close()
    }
}
