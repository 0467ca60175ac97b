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
        let again = try await tier.claimOutbox(limit: 3, owner: "a", lease: .seconds(60))
        #expect(again.map(\.sequence) == [1, 2, 3])
        // The first claim's batch is fenced off by the second claim's token: its failure changes nothing.
        try await tier.recordOutboxFailure(first)
        #expect(
            try await tier.claimOutbox(limit: 3, owner: "b", lease: .seconds(60)).isEmpty,
            "a stale claim gave the lease back")
        try await tier.recordOutboxFailure(again)
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
        let deadOwner =
            "\(ProcessInfo.processInfo.hostName)/\(OutboxLeaseOwner.bootID)/\(OutboxLeaseOwner.pidNamespace)/"
            + "\(child.process.processIdentifier)/dead"
        #expect(!OutboxLeaseOwner.isAlive(deadOwner))
        #expect(OutboxLeaseOwner.isAlive(OutboxLeaseOwner.make()))
        #expect(
            OutboxLeaseOwner.isAlive("another-host/\(OutboxLeaseOwner.bootID)/\(OutboxLeaseOwner.pidNamespace)/1/x"),
            "an owner elsewhere must be trusted until its lease expires"
        )
        #expect(
            OutboxLeaseOwner.isAlive(
                "\(ProcessInfo.processInfo.hostName)/another-boot/\(OutboxLeaseOwner.pidNamespace)/"
                    + "\(child.process.processIdentifier)/x"),
            "an owner of another boot (a volume kept across reboots) must be trusted until its lease expires"
        )
        #expect(
            OutboxLeaseOwner.isAlive(
                "\(ProcessInfo.processInfo.hostName)/\(OutboxLeaseOwner.bootID)/1/\(child.process.processIdentifier)/x"),
            "an owner of another PID namespace (a container on a shared volume) must be trusted until its lease expires"
        )
        #expect(OutboxLeaseOwner.bootID != "-" && OutboxLeaseOwner.pidNamespace != "-", "Linux gives both")
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
    @Test(
        "An uploader that stalls past its lease sends nothing more and deletes nothing of the uploader that took over")
    func stalledUploaderIsFenced() async throws {
        let tier = try await self.tier()
        let remote = RecordingTier()
        let store = { (value: String) in
            SQLiteWrite(
                operation: .store(key: CacheKey(rawValue: "k"), blob: Array(value.utf8), expiresAtMilliseconds: nil),
                replicate: true)
        }
        try await tier.applyWrites([store("v1")])
        let stalled = OutboxWriteQueue(outbox: tier, remote: remote, lease: .milliseconds(200))
        let batch = try await stalled.claim(limit: 10)
        #expect(batch.count == 1)
        // The uploader stalls (a paused process); meanwhile a newer value is queued, and another
        // uploader takes both records over once the stalled one's lease expired.
        try await tier.applyWrites([store("v2")])
        let other = OutboxWriteQueue(outbox: tier, remote: remote, lease: .seconds(60))
        let claimed = Mutex<[QueuedWrite]>([])
        #expect(
            await eventually {
                let batch = (try? await other.claim(limit: 10)) ?? []
                claimed.withLock { $0 = batch }
                return !batch.isEmpty
            }, "the expired lease was not taken over")
        let taken = claimed.withLock { $0 }
        #expect(taken.map(\.sequence) == [1, 2])
        try await other.apply(taken)
        #expect(remote.storedBlob("k") == Array("v2".utf8))

        // The stalled uploader wakes: it must not land its older value, nor delete, renew or fail
        // the records the other one holds.
        await #expect(throws: PanzaError.self) { try await stalled.apply(batch) }
        #expect(remote.storedBlob("k") == Array("v2".utf8), "the stalled uploader landed an older value")
        #expect(remote.state.withLock { $0.appliedOperations } == 2)
        do {
            _ = try await stalled.complete(batch)
            Issue.record("a stalled uploader completed records it no longer holds")
        } catch let error as PanzaError {
            #expect(error.code == .leaseLost)
        }
        await stalled.recordFailure(batch)
        #expect(try await tier.outboxCount() == 2, "the stalled uploader deleted records of the other one")
        #expect(
            try await tier.claimOutbox(limit: 10, owner: "third", lease: .seconds(60)).isEmpty,
            "the stalled uploader gave back a lease that is not its own")
        _ = try await other.complete(taken)
        #expect(try await tier.outboxCount() == 0)
        await tier.close()
    }
}
