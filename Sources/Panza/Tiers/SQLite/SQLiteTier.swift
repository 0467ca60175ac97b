public import Logging
import Synchronization

/// The durable local tier: envelopes in one SQLite file, bounded in bytes, shared by processes.
///
/// The file is in WAL mode. One writer connection applies write-behind batches, each in one
/// `BEGIN IMMEDIATE` transaction, evicts and maintains; waiting for another process's lock is
/// bounded by ``Configuration/busyTimeout``. Lookups go to a small pool of reader connections
/// (``Configuration/readerCount``), so they run in parallel and never wait behind a write.
/// Every connection has its own serial dispatch queue: no SQLite call runs on the cooperative
/// thread pool.
///
/// Reads record access times for LRU eviction in memory and the writer stores them later in
/// batches, so a read takes no write lock. Expired entries are misses, and are deleted by the next
/// read that finds them, at open, and by the writer in the background every
/// ``Configuration/expiredReclaimInterval``. The WAL is kept small: `journal_size_limit` is 64 MiB
/// and the writer runs a `TRUNCATE` checkpoint after every 32 MiB it writes, and a `PASSIVE` one
/// once it has been idle for 100 ms (so that readers read the mapped database file, not the WAL).
public final class SQLiteTier: CacheTier {
    /// How full the tier is.
    public struct Usage: Hashable, Sendable, Codable {
        /// Bytes of entries, as counted against ``Configuration/maxBytes``.
        public var bytes: Int
        /// Number of entries, expired ones included until they are reclaimed.
        public var entries: Int
        /// The size of the database file (pages in use and free).
        public var fileBytes: Int
        /// Bytes of uploads waiting for the remote tier (blobs and keys), counted against
        /// ``Configuration/outboxByteLimit`` with ``deadLetterBytes``.
        public var outboxBytes: Int = 0
        /// Bytes of uploads that failed for good (see `panza outbox`).
        public var deadLetterBytes: Int = 0
        /// Stores whose upload was refused because the outbox and the dead letters were full, by
        /// every process that shares the file (see ``Configuration/maxOutboxBytes``).
        public var refusedUploads: Int = 0
    }

    /// Entries and bytes of one namespace.
    package struct NamespaceSummary: Hashable, Sendable, Codable {
        /// The memoize id, or `""` for plain keys.
        public var namespace: String
        /// Entries of the namespace.
        public var entries: Int
        /// Bytes they count against the tier's `maxBytes`.
        public var bytes: Int
    }

    /// One stored entry, without its bytes.
    package struct EntryInfo: Hashable, Sendable, Codable {
        /// The entry's key.
        public var key: String
        /// The memoize id of the entry, `""` for a plain key.
        public var namespace: String
        /// Bytes it counts against `maxBytes`.
        public var size: Int
        /// When it was written, in milliseconds since 1970.
        public var createdAtMilliseconds: Int64
        /// When it expires (stops being fresh), in milliseconds since 1970; `nil` for never.
        public var expiresAtMilliseconds: Int64?
        /// When its stale period ends and it is dropped, in milliseconds since 1970; `nil` for
        /// never, and for an entry with no stale period (see ``Freshness``) the same as
        /// ``expiresAtMilliseconds``.
        public var staleUntilMilliseconds: Int64?
        /// When it was last read (to the tier's access-time resolution), in milliseconds since 1970.
        public var accessedAtMilliseconds: Int64
    }

    /// The outcome of ``verify(removeCorrupt:)``.
    package struct VerificationReport: Hashable, Sendable, Codable {
        /// Entries checked.
        public var checked: Int
        /// Keys whose envelopes failed verification.
        public var corruptKeys: [String]
        /// Whether the corrupt entries were removed.
        public var removed: Bool
    }

    /// `"sqlite"`, in statistics and logs.
    public var name: String { Self.tierName }
    /// ``name``, known before a tier is opened (for the statistics of the cache that opens it).
    static let tierName = "sqlite"
    /// The configuration the tier was opened with.
    public let configuration: Configuration
    private let writer: SQLiteWriter
    /// The writer's access log, held here too: lookups pass it on from a field of the tier itself,
    /// which retains nothing (through the writer, each lookup retained it, and lookups on several
    /// cores passed its reference count between them).
    private let accessLog: AccessLog
    /// How many times the writer checkpointed the WAL once idle (for tests).
    var idleCheckpointCount: Int { self.writer.idleCheckpointCount }
    /// Returns once more than `count` idle checkpoints ran, or the tier closed (for tests).
    func waitForIdleCheckpoint(after count: Int) async { await self.writer.waitForIdleCheckpoint(after: count) }
    /// The writer connection's `secure_delete` mode (0 off, 1 on, 2 fast), for tests.
    func secureDeleteMode() async throws -> Int64 { try await self.writer.secureDeleteMode() }
    private let readers: [SQLiteReader]
    /// Connections for point lookups on the caller's thread; `nil` when ``Configuration/inlineReaderCount`` is 0.
    private let inlineReaders: InlineReaderPool?
    private let nextReader = Atomic<Int>(0)
    private let isClosed = Atomic<Bool>(false)

    /// Deletes expired entries in the background: once right after the open (in batches, so that
    /// the open itself does no work proportional to the file's size), then every
    /// ``Configuration/expiredReclaimInterval``.
    private let reclaimer = Mutex<Task<Void, Never>?>(nil)

    private init(
        configuration: Configuration, writer: SQLiteWriter, readers: [SQLiteReader], inlineReaders: InlineReaderPool?,
        logger: Logger
    ) {
        self.configuration = configuration
        self.writer = writer
        self.accessLog = writer.accessLog
        self.readers = readers
        self.inlineReaders = inlineReaders
        let interval = configuration.expiredReclaimInterval
        let reclaim = Task { [writer] in
            var first = true
            while !Task.isCancelled {
                do {
                    if !first {
                        guard let interval else { return }
                        try await Task.sleep(for: interval)
                    }
                    // A file closed for long may hold many expired entries: 10,000 per transaction,
                    // so that writers never wait long behind the pass.
                    var reclaimed = 0
                    while !Task.isCancelled {
                        let batch = try await writer.reclaimExpired(limit: 10_000)
                        reclaimed += batch
                        if batch < 10_000 { break }
                    }
                    let expiredLetters = try await writer.expireDeadLetters()
                    if expiredLetters > 0 {
                        logger.info(
                            "panza: deleted dead letters past their time to live",
                            metadata: ["count": "\(expiredLetters)"])
                    }
                    if first {
                        _ = try await writer.evictIfOverLimit()
                        writer.firstReclaimPassDone.store(true, ordering: .releasing)
                    }
                    first = false
                    if reclaimed > 0 {
                        logger.debug("panza: reclaimed expired SQLite entries", metadata: ["count": "\(reclaimed)"])
                    }
                } catch is CancellationError {
                    return
                } catch {
                    first = false
                    logger.debug("panza: reclaiming expired entries deferred", metadata: ["error": "\(error)"])
                }
            }
        }
        self.reclaimer.withLock { $0 = reclaim }
    }

    /// Opens (creating or migrating) the database described by `configuration`.
    ///
    /// - Parameters:
    ///   - configuration: the file and its bounds.
    ///   - logger: where the tier logs; `nil` for nowhere.
    ///   - clock: the time by which entries expire and accesses are dated; a ``TieredCache``
    ///     passes its own (``TieredCache/Configuration/clock``). Outbox leases, which other
    ///     processes judge, always use the system's wall clock.
    /// - Throws: ``PanzaError`` with code ``PanzaError/Code/corruptDatabase``,
    ///   ``PanzaError/Code/notAPanzaDatabase`` or ``PanzaError/Code/unsupportedSchemaVersion``,
    ///   naming the path.
    public static func open(
        configuration: Configuration, logger: Logger? = nil, clock: any CacheClock = SystemCacheClock()
    ) async throws -> SQLiteTier {
        guard configuration.maxBytes > 0, (1...64).contains(configuration.readerCount),
            (0...64).contains(configuration.inlineReaderCount)
        else {
            throw PanzaError(
                code: .invalidConfiguration,
                message: "SQLite maxBytes must be positive, readerCount 1 to 64 and inlineReaderCount 0 to 64 "
                    + "(maxBytes \(configuration.maxBytes), readerCount \(configuration.readerCount), "
                    + "inlineReaderCount \(configuration.inlineReaderCount))",
                path: configuration.path
            )
        }
        let writer = try await SQLiteWriter.open(
            configuration: configuration, logger: logger ?? .panzaDisabled, clock: clock)
        var readers: [SQLiteReader] = []
        var inlineReaders: InlineReaderPool?
        do {
            if configuration.inlineReaderCount > 0 {
                inlineReaders = try InlineReaderPool(
                    path: configuration.path, count: configuration.inlineReaderCount,
                    memoryMapBytes: configuration.memoryMapBytes,
                    accessTimeResolution: configuration.accessTimeResolution.wholeMilliseconds,
                    clock: clock, slowLookup: configuration.inlineSlowLookup)
            }
            for index in 0..<configuration.readerCount {
                readers.append(
                    try await SQLiteReader.open(
                        path: configuration.path,
                        busyTimeoutMilliseconds: Int32(clamping: configuration.busyTimeout.wholeMilliseconds),
                        memoryMapBytes: configuration.memoryMapBytes,
                        accessTimeResolution: configuration.accessTimeResolution.wholeMilliseconds,
                        clock: clock,
                        label: "panza.sqlite.reader.\(index)"
                    )
                )
            }
        } catch {
            inlineReaders?.close()
            for reader in readers { await reader.close() }
            await writer.close()
            throw error
        }
        return SQLiteTier(
            configuration: configuration, writer: writer, readers: readers, inlineReaders: inlineReaders,
            logger: logger ?? .panzaDisabled)
    }

    /// Entries evicted to keep within ``Configuration/maxBytes`` since the tier opened.
    public var evictionCount: Int { self.writer.evictionCount }

    /// Whether the background pass that follows the open (expired entries, `maxBytes`) finished.
    var hasFinishedFirstReclaimPass: Bool { self.writer.firstReclaimPassDone.load(ordering: .acquiring) }

    /// WAL checkpoints that another connection held back since the tier opened (a long read
    /// transaction, in this process or another). Each is logged and tried again later.
    public var busyCheckpointCount: Int { self.writer.busyCheckpointCount }

    /// Stores whose upload this process refused since the tier opened, because the outbox and the
    /// dead letters were full (see ``Configuration/maxOutboxBytes``; the file's count, of every
    /// process, is ``Usage/refusedUploads``).
    public var refusedUploadCount: Int { self.writer.refusedUploadCount }

    // MARK: CacheTier

    /// The stored envelope of `key`, read on one of the reader connections (never behind a write).
    ///
    /// - Complexity: O(log *n*) for *n* entries (a primary-key lookup), plus the blob's size.
    public func blob(forKey key: CacheKey) async throws -> [UInt8]? {
        guard case .blob(let blob) = try await self.lookup(forKey: key).found else { return nil }
        return blob
    }

    /// The stored entry of `key`; on a miss, the key's write stamp, which a fill of the key must
    /// still find unchanged when it is applied (see ``SQLiteWrite/fillStamp``).
    ///
    /// - Parameter decodingUpTo: decode the entry as it is read, with this payload limit (see
    ///   ``SQLiteReader/lookup(forKey:log:decodingUpTo:)``); `nil` for its stored bytes.
    func lookup(forKey key: CacheKey, decodingUpTo maxPayloadBytes: Int? = nil) async throws -> (
        found: SQLiteReader.Found?, missStamp: Int64?
    ) {
        try self.checkOpen()
        if let inline = try self.inlineReaders?.lookup(
            key, log: self.accessLog, decodingUpTo: maxPayloadBytes)
        {
            if inline.requestMaintenance { self.writer.scheduleMaintenance() }
            return (inline.found, inline.missStamp)
        }
        let (found, stamp, requestMaintenance) = try await self.nextReaderConnection().lookup(
            forKey: key, log: self.accessLog, decodingUpTo: maxPayloadBytes)
        if requestMaintenance { self.writer.scheduleMaintenance() }
        return (found, stamp)
    }

    /// The stored entry of `key` read on the caller's thread by an inline reader, for the cache's
    /// local-hit path: `.some(nil)` on a miss (without a write stamp), and `nil` when no inline
    /// reader can answer now (none is free, the lookups are paused, the database is locked, or the
    /// entry is stored in chunks): the caller then takes ``lookup(forKey:decodingUpTo:)``.
    func inlineLookup(forKey key: CacheKey, decodingUpTo maxPayloadBytes: Int) throws -> TierFound?? {
        try self.checkOpen()
        guard
            let inline = try self.inlineReaders?.lookup(
                key, log: self.accessLog, decodingUpTo: maxPayloadBytes, stampingMisses: false)
        else { return nil }
        if inline.requestMaintenance { self.writer.scheduleMaintenance() }
        return .some(inline.found)
    }

    /// Applies `operations` in one write transaction (several, of at most an eighth of
    /// ``Configuration/maxBytes`` of values each, for large batches, so that the WAL stays small),
    /// evicting least recently used entries when the file passes ``Configuration/maxBytes``.
    ///
    /// - Complexity: O(*k* log *n*) for *k* operations on *n* entries; removing a namespace or
    ///   everything is O(*m*) in the entries removed.
    public func apply(_ operations: [CacheTierOperation]) async throws {
        try self.checkOpen()
        try await self.writer.apply(operations)
    }

    /// Applies `writes` (in one transaction, or in several of a bounded size for large values):
    /// those marked `replicate` are also recorded in the outbox, and fills only where their key's
    /// stamp is unchanged.
    func applyWrites(_ writes: [SQLiteWrite]) async throws {
        try self.checkOpen()
        try await self.writer.apply(writes)
    }

    // MARK: Outbox

    func claimOutbox(limit: Int, owner: String, lease: Duration) async throws -> [QueuedWrite] {
        try self.checkOpen()
        return try await self.writer.claimOutbox(limit: limit, owner: owner, lease: lease)
    }

    func completeOutbox(_ batch: [QueuedWrite]) async throws {
        try self.checkOpen()
        try await self.writer.completeOutbox(batch)
    }

    func recordOutboxFailure(_ batch: [QueuedWrite]) async throws {
        try self.checkOpen()
        try await self.writer.recordOutboxFailure(batch)
    }

    func renewOutboxLease(_ batch: [QueuedWrite], lease: Duration) async throws {
        try self.checkOpen()
        try await self.writer.renewOutboxLease(batch, lease: lease)
    }

    /// Takes the background-refresh lease of `key` for `holder` (see ``RefreshLease``).
    ///
    /// - Returns: the key's write stamp, which the refresh's store checks; `nil` when another
    ///   process refreshes the key.
    func acquireRefreshLease(key: CacheKey, holder: String, now: Int64, until: Int64) async throws -> Int64? {
        try self.checkOpen()
        return try await self.writer.acquireRefreshLease(key: key, holder: holder, now: now, until: until)
    }

    func releaseRefreshLease(key: CacheKey, holder: String) async throws {
        try self.checkOpen()
        try await self.writer.releaseRefreshLease(key: key, holder: holder)
    }

    /// Piece `index` of the large outbox record `id` (its head, then its chunk rows).
    func outboxPiece(id: Int64, index: Int) async throws -> [UInt8] {
        try self.checkOpen()
        return try await self.writer.outboxPiece(id: id, index: index)
    }

    func releaseOutboxLeases(owner: String) async throws {
        try self.checkOpen()
        try await self.writer.releaseOutboxLeases(owner: owner)
    }

    func deadLetterOutbox(id: Int64, error: String, token: String? = nil) async throws {
        try self.checkOpen()
        try await self.writer.deadLetterOutbox(id: id, error: error, token: token)
    }

    func outboxWatermark() async throws -> (watermark: UInt64, last: UInt64) {
        try self.checkOpen()
        return try await self.writer.outboxWatermark()
    }

    /// Uploads waiting for the remote tier.
    public func outboxCount() async throws -> Int {
        try self.checkOpen()
        return try await self.writer.outboxCount()
    }

    /// Uploads that failed for good, oldest first (see ``DeadLetter``).
    ///
    /// - Parameter limit: at most this many; `nil` for all.
    package func deadLetters(limit: Int? = nil) async throws -> [DeadLetter] {
        try self.checkOpen()
        return try await self.writer.deadLetters(limit: limit)
    }

    /// How many uploads failed for good and wait in the dead letters.
    public func deadLetterCount() async throws -> Int {
        try self.checkOpen()
        return try await self.writer.deadLetterCount()
    }

    /// Puts every dead letter back in the outbox, as the file now sees it (a key is sent with its
    /// current entry, or removed when it has none), so that a retried old write never overwrites a
    /// newer one. Returns how many were retried. An open cache sends them within its poll interval.
    @discardableResult
    package func retryDeadLetters() async throws -> Int {
        try self.checkOpen()
        return try await self.writer.retryDeadLetters()
    }

    /// Deletes every dead letter. Returns how many.
    @discardableResult
    package func discardDeadLetters() async throws -> Int {
        try self.checkOpen()
        return try await self.writer.discardDeadLetters()
    }

    /// The key's write stamp now, on a reader connection: what a load's store is conditional on
    /// when no lookup read one (see ``WriteStamp``).
    func writeStamp(forKey key: CacheKey) async throws -> Int64 {
        try self.checkOpen()
        return try await self.nextReaderConnection().writeStamp(for: key)
    }

    func outboxShadow(forKey key: CacheKey) async throws -> WriteShadow {
        try self.checkOpen()
        return try await self.nextReaderConnection().outboxShadow(forKey: key)
    }

    private func nextReaderConnection() -> SQLiteReader {
        let index = self.nextReader.wrappingAdd(1, ordering: .relaxed).oldValue
        return self.readers[Int(UInt(bitPattern: index) % UInt(self.readers.count))]
    }

    /// Records pending access times and closes every connection. Later calls throw
    /// ``PanzaError/Code/closed``.
    public func close() async {
        guard !self.isClosed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        self.reclaimer.withLock { $0?.cancel() }
        self.inlineReaders?.close()
        for reader in self.readers { await reader.close() }
        await self.writer.close()
    }

    // MARK: Administration

    /// How full the tier is.
    public func usage() async throws -> Usage { try await self.writer.usage() }

    /// Entries and bytes per namespace, largest first.
    package func namespaceSummaries() async throws -> [NamespaceSummary] { try await self.writer.namespaceSummaries() }

    /// Rebuilds the file to return free pages to the file system (`VACUUM`).
    package func compact() async throws { try await self.writer.compact() }

    /// Lists entries, most recently used first.
    ///
    /// - Parameters:
    ///   - namespace: only the entries of this memoize id (`""` for plain keys); `nil` for all.
    ///   - limit: at most this many; `nil` for all.
    package func entries(namespace: String? = nil, limit: Int? = nil) async throws -> [EntryInfo] {
        try await self.writer.entries(namespace: namespace, limit: limit)
    }

    /// The stored bytes of `key`, expired or not, without recording an access.
    package func storedBlob(forKey key: String) async throws -> [UInt8]? {
        try await self.writer.storedBlob(forKey: key)
    }

    /// Checks the envelope of every entry.
    ///
    /// - Parameter removeCorrupt: delete the entries that fail.
    package func verify(removeCorrupt: Bool) async throws -> VerificationReport {
        try await self.writer.verify(removeCorrupt: removeCorrupt)
    }

    /// Deletes every expired entry now. Returns how many were deleted.
    @discardableResult
    package func removeExpired() async throws -> Int { try await self.writer.removeExpired() }

    /// Deletes the dead-lettered stores older than ``Configuration/deadLetterTimeToLive`` at
    /// `now` (milliseconds since 1970, the wall clock's time by default); the expiry pass does it
    /// in the background. Returns how many.
    @discardableResult
    package func expireDeadLetters(now: Int64 = WallClock.nowMilliseconds()) async throws -> Int {
        try await self.writer.expireDeadLetters(now: now)
    }

    /// Moves an unreadable database file (and its `-wal` and `-shm` files) aside, so that the next
    /// open starts a new one. Returns the new path of the old file.
    ///
    /// Refuses a database of another application and a readable Panza file: it exists to recover from
    /// ``PanzaError/Code/corruptDatabase``. To empty a readable cache, apply ``CacheTierOperation/removeAll``.
    package static func moveAsideUnreadableFile(atPath path: String) throws -> String {
        try SQLiteWriter.moveAsideUnreadableFile(atPath: path)
    }

    /// The bytes an entry counts against ``Configuration/maxBytes``.
    static func size(key: String, blob: [UInt8]) -> Int { SQLiteWriter.size(key: key, blob: blob) }

    private func checkOpen() throws {
        if self.isClosed.load(ordering: .relaxed) {
            throw PanzaError(code: .closed, message: "the SQLite tier is closed", path: self.configuration.path)
        }
        let newerSchema = self.writer.newerSchemaVersion.load(ordering: .relaxed)
        if newerSchema != 0 { throw SQLiteWriter.newerSchemaError(newerSchema, path: self.configuration.path) }
    }

    /// A file migrated to a newer schema while open is never used again by this tier: writes
    /// to it fail for good (counted as dropped), instead of being retried forever.
    public func isPermanentFailure(_ error: any Error) -> Bool {
        (error as? PanzaError)?.code == .unsupportedSchemaVersion
    }
}
