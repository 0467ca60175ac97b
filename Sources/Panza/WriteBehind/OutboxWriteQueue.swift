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
///
/// The lease is also renewed before any request to the remote tier made a quarter lease or more
/// after the last renewal, on this process's clock of boot time (which runs while the process is
/// paused or the machine sleeps): a process that wakes after another took its records over sends
/// nothing more. Its later steps are fenced by the claim's token
/// (``OutboxRecord``), so that it deletes or renews nothing another process took over.
final class OutboxWriteQueue: WriteQueue {
    let outbox: SQLiteTier
    let remote: any CacheTier
    let lease: Duration
    /// Identifies this cache's claims in the file.
    let owner: String
    /// When the last claim was made (its lease runs from then).
    private let claimedAt = Mutex(ContinuousClock.now)

    init(outbox: SQLiteTier, remote: any CacheTier, lease: Duration) {
        self.outbox = outbox
        self.remote = remote
        self.lease = lease
        self.owner = OutboxLeaseOwner.make()
    }

    var tierName: String { self.remote.name }

    func claim(limit: Int) async throws -> [QueuedWrite] {
        let now = ContinuousClock.now
        let claimed = try await self.outbox.claimOutbox(limit: limit, owner: self.owner, lease: self.lease)
        self.claimedAt.withLock { $0 = now }
        return claimed
    }

    /// Uploads `batch` in order. A large store (kept in chunk rows) is read one chunk at a time and
    /// handed to a ``PieceWiseStoring`` tier in pieces (to another tier, joined).
    ///
    /// The batch must finish within 3/4 of its lease, unless it makes progress: each chunk read
    /// renews the lease of the whole batch (at most every quarter lease), so a large upload over
    /// a slow link completes, while a stalled one is abandoned and retried.
    func apply(_ batch: [QueuedWrite]) async throws {
        guard !batch.isEmpty else { return }
        let remote = self.remote
        // Leave a margin: the upload must be over before another process may take the lease over.
        let budget = self.lease * 3 / 4
        let keeper = LeaseKeeper(
            outbox: self.outbox, batch: batch, lease: self.lease, claimedAt: self.claimedAt.withLock { $0 })
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
                try await keeper.beforeRequest()
                try await TieredCache.apply(run, to: remote)
                run = []
            }
            try await keeper.beforeRequest()
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
        if !run.isEmpty {
            try await keeper.beforeRequest()
            try await TieredCache.apply(run, to: remote)
        }
    }

    func complete(_ batch: [QueuedWrite]) async throws -> UInt64 {
        try await self.outbox.completeOutbox(batch)
        return try await self.outbox.outboxWatermark().watermark
    }

    func recordFailure(_ batch: [QueuedWrite]) async {
        try? await self.outbox.recordOutboxFailure(batch)
    }

    func deadLetter(_ write: QueuedWrite, error: any Error) async throws -> UInt64 {
        try await self.outbox.deadLetterOutbox(id: Int64(write.sequence), error: "\(error)", token: write.leaseToken)
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

/// Renews an upload batch's outbox lease while the upload makes progress, and tells whether this
/// process may still send a request of it.
final class LeaseKeeper: Sendable {
    private let outbox: SQLiteTier
    private let batch: [QueuedWrite]
    private let lease: Duration
    /// Boot time on Linux: it runs while the process is stopped and while the machine sleeps.
    private let clock = ContinuousClock()
    private let lastProgress: Mutex<ContinuousClock.Instant>
    /// When the lease was last known to be held: the claim, then each renewal.
    private let lastRenewal: Mutex<ContinuousClock.Instant>

    init(outbox: SQLiteTier, batch: [QueuedWrite], lease: Duration, claimedAt: ContinuousClock.Instant) {
        self.outbox = outbox
        self.batch = batch
        self.lease = lease
        self.lastProgress = Mutex(self.clock.now)
        self.lastRenewal = Mutex(claimedAt)
    }

    /// How long since the upload last made progress.
    var sinceProgress: Duration { self.lastProgress.withLock { $0.duration(to: self.clock.now) } }

    /// Before a request to the remote tier: unless the lease was renewed less than a quarter lease
    /// ago (on the boot-time clock, which runs while the process is paused), renews it first, a
    /// write fenced by the claim's token that throws ``PanzaError/Code/leaseLost`` when another
    /// uploader took the records over. So a process that wakes after a pause sends nothing more
    /// unless its lease is still its own.
    func beforeRequest() async throws {
        try await self.renewIfDue(now: self.clock.now)
    }

    /// Notes progress; renews the lease when a quarter of it has passed since the last renewal.
    func progress() async throws {
        let now = self.clock.now
        self.lastProgress.withLock { $0 = now }
        try await self.renewIfDue(now: now)
    }

    private func renewIfDue(now: ContinuousClock.Instant) async throws {
        let due = self.lastRenewal.withLock { last in last.duration(to: now) >= self.lease / 4 }
        guard due else { return }
        try await self.outbox.renewOutboxLease(self.batch, lease: self.lease)
        self.lastRenewal.withLock { $0 = now }
    }
}

/// The name an uploader writes in the outbox leases it holds:
/// `host/boot-id/pid-namespace/pid/random`, so that a lease of a process that no longer runs, on
/// this machine since its last boot and in this PID namespace, is taken over at once instead of
/// at its expiry. Owners of other machines, boots or namespaces (containers sharing a volume) are
/// trusted until their lease expires.
enum OutboxLeaseOwner {
    /// The host name, without the separator of the owner's parts.
    private static let host = ProcessInfo.processInfo.hostName.replacingOccurrences(of: "/", with: "_")
    /// The kernel's boot id (Linux), or `-`.
    static let bootID: String = Self.firstLine("/proc/sys/kernel/random/boot_id") ?? "-"
    /// The PID namespace (Linux: the inode of `/proc/self/ns/pid`), or `-`.
    static let pidNamespace: String = {
        guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/pid") else {
            return "-"
        }
        return target.filter { $0.isNumber }
    }()

    private static func firstLine(_ path: String) -> String? {
        guard let data = FileManager.default.contents(atPath: path),
            let line = String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline).first
        else { return nil }
        return String(line).replacingOccurrences(of: "/", with: "")
    }

    static func make() -> String {
        "\(self.host)/\(self.bootID)/\(self.pidNamespace)/"
            + "\(ProcessInfo.processInfo.processIdentifier)/\(UUID().uuidString.prefix(8))"
    }

    /// `false` only for an owner of this machine, boot and PID namespace whose process is gone.
    static func isAlive(_ owner: String) -> Bool {
        let parts = owner.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 5,
            parts[0] == Substring(self.host),
            parts[1] == Substring(self.bootID), parts[1] != "-",
            parts[2] == Substring(self.pidNamespace), parts[2] != "-",
            let pid = Int32(parts[3])
        else { return true }
        if pid == ProcessInfo.processInfo.processIdentifier { return true }
        return kill(pid, 0) == 0 || errno != ESRCH
    }
}
