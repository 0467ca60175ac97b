import Foundation
import Synchronization
import Testing

@testable import Panza

/// Several caches sharing one SQLite file upload its outbox one at a time, in order, and take over
/// the records of a process that died.
@Suite(.timeLimit(.minutes(1)))
struct OutboxLeaseTests {
    let directory: TemporaryDirectory

    init() throws {
        self.directory = try TemporaryDirectory()
    }

    private func tier() async throws -> SQLiteTier {
        try await SQLiteTier.open(configuration: .init(path: self.directory.path("cache.sqlite")))
    }

    private func queueRecords(_ tier: SQLiteTier, count: Int) async throws {
        try await tier.applyWrites(
            (0..<count).map {
                SQLiteWrite(
                    operation: .store(key: CacheKey(rawValue: "k\($0)"), blob: [1, 2, 3], expiresAtMilliseconds: nil),
                    replicate: true
                )
            }
        )
    }

    @Test("A claimed head is not claimed by another uploader until it is released or its lease expires")
    func claims() async throws {
        let tier = try await self.tier()
        try await self.queueRecords(tier, count: 5)
        let first = try await tier.claimOutbox(limit: 3, owner: "a", lease: .seconds(60))
        #expect(first.map(\.sequence) == [1, 2, 3])
        #expect(try await tier.claimOutbox(limit: 3, owner: "b", lease: .seconds(60)).isEmpty, "b jumped a's head")
        #expect(try await tier.claimOutbox(limit: 3, owner: "a", lease: .seconds(60)).map(\.sequence) == [1, 2, 3])
        try await tier.recordOutboxFailure(first, owner: "a")
        let taken = try await tier.claimOutbox(limit: 10, owner: "b", lease: .milliseconds(1))
        #expect(taken.map(\.sequence) == [1, 2, 3, 4, 5])
        #expect(taken.first?.attempts == 1, "the failed attempt was not counted")
        try await Task.sleep(for: .milliseconds(5))
        #expect(
            try await tier.claimOutbox(limit: 2, owner: "c", lease: .seconds(60)).map(\.sequence) == [1, 2],
            "an expired lease was not taken over"
        )
        await tier.close()
    }

    @Test("The lease of a process of this machine that is gone is taken over at once")
    func deadOwner() async throws {
        let tier = try await self.tier()
        try await self.queueRecords(tier, count: 2)
        let child = try ChildProcess.start(["hold-lock", self.directory.path("other.sqlite"), "0"])
        _ = try await child.wait()
        let deadOwner = "\(ProcessInfo.processInfo.hostName)/\(child.process.processIdentifier)/dead"
        #expect(!OutboxLeaseOwner.isAlive(deadOwner))
        #expect(OutboxLeaseOwner.isAlive(OutboxLeaseOwner.make()))
        #expect(
            OutboxLeaseOwner.isAlive("another-host/1/x"),
            "an owner elsewhere must be trusted until its lease expires"
        )
        #expect(try await tier.claimOutbox(limit: 5, owner: deadOwner, lease: .seconds(600)).count == 2)
        #expect(try await tier.claimOutbox(limit: 5, owner: "me", lease: .seconds(60)).count == 2)
        await tier.close()
    }

    @Test("Two caches on one file: a slow upload of an old value never lands after a newer removal")
    func orderAcrossCaches() async throws {
        let remote = RecordingTier()
        let writer = try await makeCache(in: self.directory) { $0.remote = remote }
        let gate = Gate()
        remote.state.withLock { $0.applyGate = gate }
        try await writer.set("old", forKey: "k")
        #expect(await eventually { remote.state.withLock { $0.appliesStarted } == 1 }, "the upload did not start")

        let remover = try await makeCache(in: self.directory) {
            $0.remote = remote
            $0.writeBehind.outboxPollInterval = .milliseconds(10)
        }
        try await remover.removeValue(forKey: "k")
        let removerFlush = Task { try await remover.flush() }
        try await Task.sleep(for: .milliseconds(100))
        #expect(remote.state.withLock { $0.appliesStarted } == 1, "the second cache uploaded past a held head")
        remote.state.withLock { $0.applyGate = nil }
        gate.open()
        try await removerFlush.value
        let log = remote.state.withLock { $0.log }
        #expect(log.count == 2)
        #expect(log.last == "remove k", "order in the bucket: \(log)")
        #expect(remote.keys.isEmpty, "the old value landed after the removal")
        try await writer.close()
        try await remover.close()
    }
}
