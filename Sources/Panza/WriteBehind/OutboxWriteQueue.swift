import Foundation

/// The durable write-behind queue of a remote tier below SQLite: the SQLite outbox.
///
/// Records are written by the SQLite queue in the same transaction as the local entry, so an
/// upload pending when the process died is sent by the next process that opens the file. This
/// queue claims the head of the outbox with a lease (see ``OutboxRecord``), applies it to the
/// remote tier within the lease, and deletes it. A batch that outlives
/// ``TieredCache/Configuration/WriteBehind/outboxLease`` (minus a margin) is abandoned as failed,
/// so that no upload of this process can land after another process took the records over.
final class OutboxWriteQueue: WriteQueue {
    let outbox: SQLiteTier
    let remote: any CacheTier
    let lease: Duration
    /// Identifies this cache's claims in the file.
    let owner: String

    init(outbox: SQLiteTier, remote: any CacheTier, lease: Duration) {
        self.outbox = outbox
        self.remote = remote
        self.lease = lease
        self.owner = OutboxLeaseOwner.make()
    }

    var tierName: String { self.remote.name }

    func claim(limit: Int) async throws -> [QueuedWrite] {
        try await self.outbox.claimOutbox(limit: limit, owner: self.owner, lease: self.lease)
    }

    func apply(_ batch: [QueuedWrite]) async throws {
        let operations = batch.map(\.operation)
        let remote = self.remote
        // Leave a margin: the upload must be over before another process may take the lease over.
        let budget = self.lease * 3 / 4
        try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                try await remote.apply(operations)
                return true
            }
            group.addTask {
                try await Task.sleep(for: budget)
                return false
            }
            let finished = try await group.next() ?? false
            group.cancelAll()
            guard finished else {
                throw PanzaError(
                    code: .timedOut,
                    message: "an upload batch to the \(remote.name) tier outlived its outbox lease (\(budget)); "
                        + "it stays in the outbox and will be retried"
                )
            }
        }
    }

    func complete(_ batch: [QueuedWrite]) async throws -> UInt64 {
        try await self.outbox.completeOutbox(batch)
        return try await self.outbox.outboxWatermark().watermark
    }

    func recordFailure(_ batch: [QueuedWrite]) async {
        try? await self.outbox.recordOutboxFailure(batch, owner: self.owner)
    }

    func deadLetter(_ write: QueuedWrite, error: any Error) async throws -> UInt64 {
        try await self.outbox.deadLetterOutbox(id: Int64(write.sequence), error: "\(error)")
        return try await self.outbox.outboxWatermark().watermark
    }

    func watermark() async throws -> UInt64 {
        try await self.outbox.outboxWatermark().watermark
    }

    func lastSequence() async throws -> UInt64 {
        try await self.outbox.outboxWatermark().last
    }

    func isPermanent(_ error: any Error) -> Bool {
        self.remote.isPermanentFailure(error)
    }

    /// Gives back this cache's claims, so that the next uploader need not wait for them to expire.
    func releaseLeases() async {
        try? await self.outbox.releaseOutboxLeases(owner: self.owner)
    }

    func shadow(forKey key: CacheKey) async throws -> WriteShadow {
        try await self.outbox.outboxShadow(forKey: key)
    }
}

/// The name an uploader writes in the outbox leases it holds: `host/pid/random`, so that a lease of
/// a process of this machine that no longer runs is taken over at once instead of at its expiry.
enum OutboxLeaseOwner {
    private static let host = ProcessInfo.processInfo.hostName

    static func make() -> String {
        "\(self.host)/\(ProcessInfo.processInfo.processIdentifier)/\(UUID().uuidString.prefix(8))"
    }

    /// `false` only for an owner of this machine whose process is gone; owners elsewhere are
    /// trusted until their lease expires.
    static func isAlive(_ owner: String) -> Bool {
        let parts = owner.split(separator: "/")
        guard parts.count == 3, parts[0] == Substring(self.host), let pid = Int32(parts[1]) else { return true }
        if pid == ProcessInfo.processInfo.processIdentifier { return true }
        return kill(pid, 0) == 0 || errno != ESRCH
    }
}
