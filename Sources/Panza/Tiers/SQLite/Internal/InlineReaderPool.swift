import Dispatch
import Synchronization

/// Read connections that point lookups use on the caller's own thread: a hit costs the lookup
/// itself, not two thread hand-offs (cooperative pool → reader queue → back).
///
/// An inline lookup never waits: it takes a free connection or gives up; its connection has no
/// busy timeout (a lock it meets is an answer, not a wait); it never reads an entry stored in
/// chunks. In each of those cases the caller falls back to the tier's reader queues. A point
/// lookup in WAL mode on a memory-mapped file is a few microseconds; a cold page costs a read from
/// the disk on the caller's thread, which other tasks then wait for: a lookup slower than
/// `slowLookup` during which the process read from the disk (``DiskReads``) sends lookups to the
/// queues for `pause` (measured: with 2 inline connections on 2 cores and a cold 250 MB file, a
/// task sleeping 1 ms woke up to 395 ms late). A lookup that is slow only because its thread was
/// preempted on a busy machine read nothing from the disk, and pauses nothing.
final class InlineReaderPool: Sendable {
    private struct State: ~Copyable {
        /// Connections not in use. A connection is used by one thread at a time: the one that took
        /// it out of this list, until it puts it back (so handing it over is safe).
        var free: [Handoff<SQLiteConnection>]
        var isClosed = false
    }

    private let state: Mutex<State>
    private let accessTimeResolution: Int64
    /// `slowLookup` and `pause`, in nanoseconds.
    private let slowLookupNanoseconds: Int64
    private let pauseNanoseconds: Int64
    /// Until when (``now()``) lookups go to the queues, after a slow one.
    private let pausedUntil = Atomic<Int64>(0)
    /// The process's disk reads so far (``DiskReads/count()``); `nil` when they cannot be counted.
    private let diskReads: @Sendable () -> Int?
    /// The disk reads when the last slow lookup (or the pool's opening) counted them.
    private let diskReadsSeen: Atomic<Int>

    /// Opens `count` connections (none when 0).
    init(
        path: String, count: Int, memoryMapBytes: Int, accessTimeResolution: Int64,
        slowLookup: Duration = .milliseconds(1), pause: Duration = .seconds(1),
        diskReads: @escaping @Sendable () -> Int? = DiskReads.count
    ) throws {
        var connections: [SQLiteConnection] = []
        do {
            for _ in 0..<count {
                let connection = try SQLiteConnection(path: path, busyTimeoutMilliseconds: 0)
                connections.append(connection)
                try connection.execute("PRAGMA mmap_size = \(memoryMapBytes)")
            }
        } catch {
            for connection in connections { connection.close() }
            throw error
        }
        self.state = Mutex(State(free: connections.map { Handoff(value: $0) }))
        self.accessTimeResolution = accessTimeResolution
        self.slowLookupNanoseconds = slowLookup.wholeNanoseconds
        self.pauseNanoseconds = pause.wholeNanoseconds
        self.diskReads = diskReads
        self.diskReadsSeen = Atomic(diskReads() ?? 0)
    }

    /// Looks `key` up on a free connection, on this thread; `nil` when the caller should use a
    /// reader queue instead (no free connection, the database is locked, or the entry is stored
    /// in chunks). Without `stampingMisses`, a miss has no write stamp (see
    /// ``SQLiteEntryLookup/lookup(_:log:decodingUpTo:headOnly:stampingMisses:)``).
    func lookup(_ key: CacheKey, log: AccessLog, decodingUpTo maxPayloadBytes: Int?, stampingMisses: Bool = true)
        throws -> (found: TierFound?, missStamp: Int64?, requestMaintenance: Bool)?
    {
        let now = Self.now()
        guard now >= self.pausedUntil.load(ordering: .relaxed) else { return nil }
        let taken = self.state.withLock { state -> Handoff<SQLiteConnection>? in
            state.isClosed ? nil : state.free.popLast()
        }
        guard let taken else { return nil }
        let connection = taken.value
        defer {
            let closeNow = self.state.withLock { state -> Bool in
                if state.isClosed { return true }
                state.free.append(taken)
                return false
            }
            if closeNow { connection.close() }
            let elapsed = Self.now() - now
            if elapsed > self.slowLookupNanoseconds, self.readFromDisk() {
                // The file is cold: stop holding the caller's threads.
                self.pausedUntil.store(now + elapsed + self.pauseNanoseconds, ordering: .relaxed)
            }
        }
        do {
            return try SQLiteEntryLookup(connection: connection, accessTimeResolution: self.accessTimeResolution)
                .lookup(
                    key, log: log, decodingUpTo: maxPayloadBytes, headOnly: true, stampingMisses: stampingMisses)
        } catch let error as PanzaError where error.code == .databaseBusy {
            return nil
        }
    }

    /// Whether the process read from the disk since the last slow lookup asked; `true` when that
    /// cannot be told. Only slow lookups ask, so a hit pays no system call.
    private func readFromDisk() -> Bool {
        guard let count = self.diskReads() else { return true }
        return self.diskReadsSeen.exchange(count, ordering: .relaxed) != count
    }

    /// Whether lookups go to the reader queues now, after a slow one (for tests).
    var isPaused: Bool {
        Self.now() < self.pausedUntil.load(ordering: .relaxed)
    }

    /// Monotonic nanoseconds (`CLOCK_MONOTONIC`): read twice per lookup, so the cheapest clock
    /// that is fine enough for the slow-lookup bound.
    private static func now() -> Int64 {
        Int64(clamping: DispatchTime.now().uptimeNanoseconds)
    }

    /// Closes the free connections now and the others as their lookups end.
    func close() {
        let free = self.state.withLock { state -> [Handoff<SQLiteConnection>] in
            state.isClosed = true
            defer { state.free = [] }
            return state.free
        }
        for connection in free { connection.value.close() }
    }
}
