import Foundation
import Synchronization

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

    /// Uploads `batch` in order. A large store (kept in chunk rows) is read one chunk at a time and
    /// handed to a ``PieceWiseStoring`` tier in pieces (to another tier, joined).
    ///
    /// The batch must finish within 3/4 of its lease, unless it makes progress: each chunk read
    /// renews the lease of the whole batch (at most every quarter lease), so a large upload over
    /// a slow link completes, while a stalled one is abandoned and retried.
    func apply(_ batch: [QueuedWrite]) async throws {
        guard let first = batch.first, let last = batch.last else { return }
        let remote = self.remote
        let keeper = LeaseKeeper(
            outbox: self.outbox, ids: Int64(first.sequence)...Int64(last.sequence), owner: self.owner,
            lease: self.lease)
        // Leave a margin: the upload must be over before another process may take the lease over.
        let budget = self.lease * 3 / 4
        try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                try await Self.upload(batch, to: remote, outbox: self.outbox, keeper: keeper)
                return true
            }
            group.addTask {
                while true {
                    let idle = keeper.sinceProgress
                    if idle >= budget { return false }
                    try await Task.sleep(for: budget - idle)
                }
            }
            let finished = try await group.next() ?? false
            group.cancelAll()
            guard finished else {
                throw PanzaError(
                    code: .timedOut,
                    message: "an upload batch to the \(remote.name) tier made no progress for \(budget), 3/4 of its "
                        + "outbox lease; it stays in the outbox and will be retried"
                )
            }
        }
    }

    private static func upload(
        _ batch: [QueuedWrite], to remote: any CacheTier, outbox: SQLiteTier, keeper: LeaseKeeper
    ) async throws {
        var run: [QueuedWrite] = []
        for write in batch {
            guard let upload = write.outboxUpload, case .store(let key, _, let expiresAt) = write.operation else {
                run.append(write)
                continue
            }
            if !run.isEmpty {
                try await TieredCache.apply(run, to: remote)
                run = []
            }
            let pieces = BlobPieces(count: upload.chunks + 1) { index in
                let piece = try await outbox.outboxPiece(id: upload.id, index: index)
                try await keeper.progress()
                return piece
            }
            if let streaming = remote as? any PieceWiseStoring {
                try await streaming.store(
                    key: key, byteCount: upload.byteCount, expiresAtMilliseconds: expiresAt, pieces: pieces)
            } else {
                let blob = try await pieces.joined(byteCount: upload.byteCount)
                try await remote.apply([.store(key: key, blob: blob, expiresAtMilliseconds: expiresAt)])
            }
        }
        if !run.isEmpty { try await TieredCache.apply(run, to: remote) }
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

/// Renews an upload batch's outbox lease while the upload makes progress.
final class LeaseKeeper: Sendable {
    private let outbox: SQLiteTier
    private let ids: ClosedRange<Int64>
    private let owner: String
    private let lease: Duration
    private let clock = ContinuousClock()
    private let lastProgress: Mutex<ContinuousClock.Instant>
    private let lastRenewal: Mutex<ContinuousClock.Instant>

    init(outbox: SQLiteTier, ids: ClosedRange<Int64>, owner: String, lease: Duration) {
        self.outbox = outbox
        self.ids = ids
        self.owner = owner
        self.lease = lease
        self.lastProgress = Mutex(self.clock.now)
        self.lastRenewal = Mutex(self.clock.now)
    }

    /// How long since the upload last made progress.
    var sinceProgress: Duration { self.lastProgress.withLock { $0.duration(to: self.clock.now) } }

    /// Notes progress; renews the lease when a quarter of it has passed since the last renewal.
    func progress() async throws {
        let now = self.clock.now
        self.lastProgress.withLock { $0 = now }
        let due = self.lastRenewal.withLock { last in
            guard last.duration(to: now) >= self.lease / 4 else { return false }
            last = now
            return true
        }
        if due { try await self.outbox.renewOutboxLease(ids: self.ids, owner: self.owner, lease: self.lease) }
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
