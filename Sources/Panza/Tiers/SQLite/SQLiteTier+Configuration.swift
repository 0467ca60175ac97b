import Foundation

extension SQLiteTier {
    /// Settings of the SQLite tier.
    public struct Configuration: Hashable, Sendable {
        /// Half the active processors, from 1 to 4.
        public static var defaultReaderCount: Int {
            max(1, min(4, ProcessInfo.processInfo.activeProcessorCount / 2))
        }

        /// The default ``inlineReaderCount``: the processors, from 1 to 8.
        public static var defaultInlineReaderCount: Int {
            max(1, min(8, ProcessInfo.processInfo.activeProcessorCount))
        }

        /// When SQLite waits for the disk.
        public enum Synchronous: String, Hashable, Sendable {
            /// `synchronous=NORMAL`: a committed write survives the process being killed; the last
            /// transactions may be lost if the machine loses power. The default, as in most WAL setups.
            case normal = "NORMAL"
            /// `synchronous=FULL`: a committed write also survives a power loss, at the cost of an
            /// `fsync` per transaction.
            case full = "FULL"
        }

        /// The database file. Its folder must exist. Several processes may share it.
        public var path: String
        /// The most bytes of entries (envelope plus key) the file holds before the least recently
        /// used are evicted. The file itself is larger by SQLite's page and index overhead.
        public var maxBytes: Int
        /// How long to wait for another process's write lock before failing with
        /// ``PanzaError/Code/databaseBusy``. Write-behind retries such failures; nothing is lost.
        public var busyTimeout: Duration
        /// How precisely read times are recorded for LRU eviction. A read updates the stored time
        /// only when it is older than this, and in batches, so that reads stay reads.
        public var accessTimeResolution: Duration
        /// See ``Synchronous``.
        public var synchronous: Synchronous
        /// Connections that serve lookups in parallel, each on its own thread. By default half the
        /// processors, from 1 to 4: on 2 cores one reader beside the writer is fastest (measured in
        /// `Benchmarks/`), since every reader is a thread competing with the cooperative pool.
        public var readerCount: Int
        /// How much of the file readers map into memory (`PRAGMA mmap_size`), which saves a system
        /// call per page read; 256 MiB by default, 0 to read with `pread` only.
        public var memoryMapBytes: Int
        /// When the file is not a database or is damaged, move it aside (to
        /// `<path>.unreadable-<milliseconds>`) and start a new one instead of failing with
        /// ``PanzaError/Code/corruptDatabase``. A database of another application is never moved.
        public var rebuildIfUnreadable: Bool
        /// How often the writer deletes expired entries in the background (10,000 per transaction),
        /// after a first pass right after the open; `nil` for that first pass only (reads delete
        /// the expired entries they find). One minute by default.
        public var expiredReclaimInterval: Duration? = .seconds(60)
        /// The most bytes that uploads waiting for the remote tier (the outbox) and uploads that
        /// failed for good (the dead letters) may hold together, on top of ``maxBytes``; `nil`
        /// (the default) for as much as ``maxBytes``. When a store would pass it, its upload is
        /// refused: the entry is stored locally as usual, and the remote tier is sent a removal of
        /// the key instead (a few bytes), so that no older copy there is served in its place.
        /// Removals are never refused. Refusals are logged and counted
        /// (``SQLiteTier/Usage/refusedUploads``). A queued upload is dropped as soon as a newer
        /// write of its key is queued, so an outage costs one upload per key, not one per write.
        public var maxOutboxBytes: Int? = nil
        /// How long an upload that failed for good stays in the dead letters (for `panza outbox`
        /// to retry or show) before the expiry pass deletes it; 7 days by default, `nil` to keep
        /// them until they are retried or discarded. A dead-lettered *removal* never expires: it
        /// keeps the remote copy it could not remove from being served.
        public var deadLetterTimeToLive: Duration? = .seconds(7 * 24 * 3600)
        /// The writer empties the WAL (a `TRUNCATE` checkpoint) after this many bytes were written,
        /// so that large batches do not leave a large WAL behind. 32 MiB; smaller in tests.
        var checkpointAfterBytes = 32 << 20
        /// Connections that serve point lookups on the caller's own thread, without a hand-off to
        /// a reader queue (0 to always use the reader queues). A lookup takes a free one or goes to
        /// the queues, never waits for a lock on it (no busy timeout), and leaves entries stored in
        /// chunks (over 1 MiB) to the queues. Each hit costs the lookup itself (a few microseconds
        /// on a mapped file). By default one per processor (at most 8), so that every thread of
        /// the cooperative pool can look up at once. A page not in memory is read on the caller's
        /// thread, which the other tasks of the cooperative pool then wait for: a lookup that
        /// takes longer than ``inlineSlowLookup`` while the process read from the disk (a cold
        /// file) sends lookups to the queues for a second.
        public var inlineReaderCount = Configuration.defaultInlineReaderCount
        /// How long an inline lookup may take before lookups go to the reader queues for a second
        /// (see ``inlineReaderCount``); 1 ms by default. Only a slow lookup during which the
        /// process read from the disk (major page faults or block reads, from `getrusage`) counts:
        /// one slowed by a busy machine's scheduler does not.
        public var inlineSlowLookup: Duration = .milliseconds(1)

        /// The bound of the outbox and the dead letters together: ``maxOutboxBytes``, or
        /// ``maxBytes`` when it is `nil`.
        public var outboxByteLimit: Int { self.maxOutboxBytes ?? self.maxBytes }

        /// - Parameters:
        ///   - path: the database file.
        ///   - maxBytes: the bound on stored bytes; 1 GiB by default.
        ///   - busyTimeout: see ``busyTimeout``.
        ///   - accessTimeResolution: see ``accessTimeResolution``.
        ///   - synchronous: see ``synchronous``.
        ///   - rebuildIfUnreadable: see ``rebuildIfUnreadable``.
        ///   - readerCount: see ``readerCount``.
        ///   - memoryMapBytes: see ``memoryMapBytes``.
        public init(
            path: String,
            maxBytes: Int = 1 << 30,
            busyTimeout: Duration = .seconds(10),
            accessTimeResolution: Duration = .seconds(1),
            synchronous: Synchronous = .normal,
            rebuildIfUnreadable: Bool = false,
            readerCount: Int = Configuration.defaultReaderCount,
            memoryMapBytes: Int = 256 << 20
        ) {
            self.readerCount = readerCount
            self.memoryMapBytes = memoryMapBytes
            self.path = path
            self.maxBytes = maxBytes
            self.busyTimeout = busyTimeout
            self.accessTimeResolution = accessTimeResolution
            self.synchronous = synchronous
            self.rebuildIfUnreadable = rebuildIfUnreadable
        }
    }
}
