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
///
/// Each reader keeps its read transaction across lookups while nothing changes in the file
/// (``InlineReader``); a transaction idle for `idleTransaction` is ended, so that an idle process
/// never pins the WAL that other processes checkpoint.
///
/// Lookups on several cores share no lock and, as long as there is a reader per core, no cache
/// line: each reader has a slot of its own, which a lookup takes with one compare-and-exchange,
/// starting from the slot of the CPU it runs on (``CurrentCPU``). A core then keeps using the same
/// reader, whose connection, statements and page cache stay in that core's caches; a pool that
/// started from the slot freed last (as this one did) passed readers between cores on every lookup.
final class InlineReaderPool: Sendable {
    /// One reader and whether it is free, taken (used by one thread: the one that took it, so
    /// handing the reader over is safe) or closed.
    private final class Slot: @unchecked Sendable {
        static let free = 0
        static let taken = 1
        static let closed = 2
        /// Padded, so that two slots' states are never on one cache line.
        let state = CacheLinePadded(Atomic<Int>(Slot.free))
        let reader: InlineReader

        init(reader: InlineReader) {
            self.reader = reader
        }

        func take() -> Bool {
            self.state.value.compareExchange(expected: Slot.free, desired: Slot.taken, ordering: .acquiring).exchanged
        }
    }

    private let slots: [Slot]
    private let isClosed = Atomic<Bool>(false)
    private let accessTimeResolution: Int64
    private let clock: any CacheClock
    /// `slowLookup` and `pause`, in nanoseconds.
    private let slowLookupNanoseconds: Int64
    private let pauseNanoseconds: Int64
    /// Until when (``now()``) lookups go to the queues, after a slow one.
    private let pausedUntil = Atomic<Int64>(0)
    /// The process's disk reads so far (``DiskReads/count()``); `nil` when they cannot be counted.
    private let diskReads: @Sendable () -> Int?
    /// The disk reads when the last slow lookup (or the pool's opening) counted them.
    private let diskReadsSeen: Atomic<Int>
    /// The file's WAL index, which tells whether a held transaction still sees the file as it is;
    /// `nil` when it cannot be mapped (then every lookup has a transaction of its own).
    private let watch: WALIndexWatch?
    /// `idleTransaction`, in nanoseconds.
    private let idleTransactionNanoseconds: Int64
    /// Whether a sweep of idle transactions is scheduled.
    private let sweepScheduled = Atomic<Bool>(false)
    /// How many read transactions the readers began (for tests).
    private let transactionsBegun = Atomic<Int>(0)

    /// Opens `count` connections (none when 0).
    init(
        path: String, count: Int, memoryMapBytes: Int, accessTimeResolution: Int64,
        clock: any CacheClock = SystemCacheClock(), slowLookup: Duration = .milliseconds(1),
        pause: Duration = .seconds(1),
        idleTransaction: Duration = .milliseconds(10), diskReads: @escaping @Sendable () -> Int? = DiskReads.count
    ) throws {
        var connections: [SQLiteConnection] = []
        var watch: WALIndexWatch?
        do {
            for _ in 0..<count {
                let connection = try SQLiteConnection(path: path, busyTimeoutMilliseconds: 0)
                connections.append(connection)
                try connection.execute("PRAGMA mmap_size = \(memoryMapBytes)")
            }
            if count > 0 {
                // A connection of its own maps the file's WAL index (by a read) and keeps it mapped
                // for as long as the watch lives: the readers' connections close with the pool,
                // while a lookup may still read the index. Without it (the file is locked now),
                // every lookup has a transaction of its own.
                let watcher = try SQLiteConnection(path: path, busyTimeoutMilliseconds: 0)
                if (try? watcher.execute("SELECT count(*) FROM sqlite_master")) != nil {
                    watch = WALIndexWatch(connection: watcher)
                }
            }
        } catch {
            for connection in connections { connection.close() }
            throw error
        }
        self.slots = connections.map { Slot(reader: InlineReader(connection: $0)) }
        self.watch = watch
        self.idleTransactionNanoseconds = idleTransaction.wholeNanoseconds
        self.accessTimeResolution = accessTimeResolution
        self.clock = clock
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
        guard let slot = self.take() else { return nil }
        let reader = slot.reader
        defer {
            let end = Self.now()
            reader.lastUsed = end
            let holds = reader.holdsTransaction
            if self.release(slot), holds { self.scheduleSweep() }
            let elapsed = end - now
            if elapsed > self.slowLookupNanoseconds, self.readFromDisk() {
                // The file is cold: stop holding the caller's threads.
                self.pausedUntil.store(now + elapsed + self.pauseNanoseconds, ordering: .relaxed)
            }
        }
        do {
            // Without a watch, no transaction is kept (nothing tells when it would go stale).
            if self.watch != nil, try reader.prepareLookup(current: self.watch?.mark()) {
                self.transactionsBegun.add(1, ordering: .relaxed)
            }
            return try SQLiteEntryLookup(
                connection: reader.connection, accessTimeResolution: self.accessTimeResolution, clock: self.clock
            )
            .lookup(
                key, log: log, decodingUpTo: maxPayloadBytes, headOnly: true, stampingMisses: stampingMisses)
        } catch let error as PanzaError where error.code == .databaseBusy {
            reader.endTransaction()
            return nil
        } catch {
            reader.endTransaction()
            throw error
        }
    }

    /// A free slot, now taken; `nil` when every slot is taken or the pool is closed.
    private func take() -> Slot? {
        let count = self.slots.count
        guard count > 0, !self.isClosed.load(ordering: .relaxed) else { return nil }
        var index = CurrentCPU.index % count
        for _ in 0..<count {
            let slot = self.slots[index]
            if slot.take() { return slot }
            index = index + 1 == count ? 0 : index + 1
        }
        return nil
    }

    /// Frees a taken slot, or closes its reader when the pool closed; returns whether it is free.
    ///
    /// The slot is freed before the pool's state is read, and ``close()`` marks the pool closed
    /// before it closes the free slots (all sequentially consistent): one of the two sees the
    /// other, and exactly one closes the reader.
    private func release(_ slot: Slot) -> Bool {
        slot.state.value.store(Slot.free, ordering: .sequentiallyConsistent)
        guard self.isClosed.load(ordering: .sequentiallyConsistent) else { return true }
        Self.close(slot)
        return false
    }

    /// Closes the reader of a free slot, unless another thread took or closed it first.
    private static func close(_ slot: Slot) {
        guard
            slot.state.value.compareExchange(
                expected: Slot.free, desired: Slot.closed, ordering: .sequentiallyConsistent
            ).exchanged
        else { return }
        slot.reader.connection.close()
    }

    /// Schedules a sweep of idle transactions, unless one is scheduled.
    private func scheduleSweep() {
        guard !self.sweepScheduled.load(ordering: .relaxed),
            self.sweepScheduled.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged
        else { return }
        DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(Int(self.idleTransactionNanoseconds))) {
            [weak self] in
            self?.sweep()
        }
    }

    /// Ends the transactions of the free readers idle for `idleTransaction`, and schedules another
    /// sweep while transactions are held.
    private func sweep() {
        self.sweepScheduled.store(false, ordering: .relaxed)
        let now = Self.now()
        var stillHeld = false
        for slot in self.slots where slot.take() {
            let reader = slot.reader
            if reader.holdsTransaction {
                if now - reader.lastUsed >= self.idleTransactionNanoseconds {
                    reader.endTransaction()
                } else {
                    stillHeld = true
                }
            }
            guard self.release(slot) else { return }
        }
        // A taken slot schedules a sweep when its lookup ends.
        if stillHeld { self.scheduleSweep() }
    }

    /// How many free readers hold a read transaction (for tests).
    var heldTransactionCount: Int {
        var count = 0
        for slot in self.slots where slot.take() {
            if slot.reader.holdsTransaction { count += 1 }
            _ = self.release(slot)
        }
        return count
    }

    /// Whether lookups can keep a read transaction across lookups (for tests).
    var keepsTransactions: Bool { self.watch != nil }

    /// How many read transactions the readers began and kept for later lookups (for tests).
    var transactionsBegunCount: Int { self.transactionsBegun.load(ordering: .relaxed) }

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
        self.isClosed.store(true, ordering: .sequentiallyConsistent)
        for slot in self.slots { Self.close(slot) }
    }
}
