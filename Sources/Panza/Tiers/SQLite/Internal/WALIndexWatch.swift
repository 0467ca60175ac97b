import CPanzaSQLite

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Tells, without a system call, whether a WAL-mode SQLite file changed since a moment it marked:
/// a transaction committed (by any connection of any process) or a checkpoint copied frames back.
///
/// SQLite keeps the WAL's index in the file's `-shm` file, which every connection maps in memory.
/// Its header (https://sqlite.org/walformat.html) changes with every commit: a change counter, the
/// last valid frame, the checksums, the salts that change when the WAL restarts. A connection
/// reads it at the start of every read transaction to learn whether its page cache is still good.
/// This type maps the same file read-only and reads the header the same way, so that an inline
/// reader can keep one read transaction across lookups for as long as nothing changed
/// (``InlineReader``): a lookup in it sees exactly what a new transaction would.
///
/// The file is mapped only while a connection of this process has the database open: SQLite
/// truncates a `-shm` file only when no connection of any process has it open, and a truncated
/// mapping would fault.
final class WALIndexWatch: @unchecked Sendable {
    /// The wal-index header and the checkpoint's progress at one moment.
    struct Mark: Equatable {
        fileprivate var words: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64)

        static func == (lhs: Mark, rhs: Mark) -> Bool {
            lhs.words.0 == rhs.words.0 && lhs.words.1 == rhs.words.1 && lhs.words.2 == rhs.words.2
                && lhs.words.3 == rhs.words.3 && lhs.words.4 == rhs.words.4 && lhs.words.5 == rhs.words.5
                && lhs.words.6 == rhs.words.6
        }
    }

    /// The header and the checkpoint information take the first 136 bytes; one page is mapped.
    private static let mappedBytes = 4096
    private let descriptor: Int32
    private let base: UnsafeRawPointer

    /// Maps the wal-index of the database at `databasePath`, or returns `nil` when there is none to
    /// map (the file is not in WAL mode, or its index is not initialized yet): callers then start a
    /// transaction for every lookup.
    ///
    /// Call it only while a connection of this process has read the database in WAL mode, and keep
    /// that connection open for as long as this watch lives.
    init?(databasePath: String) {
        let descriptor = open(databasePath + "-shm", O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        var status = stat()
        guard fstat(descriptor, &status) == 0, Int(status.st_size) >= Self.mappedBytes,
            let mapping = mmap(nil, Self.mappedBytes, PROT_READ, MAP_SHARED, descriptor, 0),
            mapping != MAP_FAILED
        else {
            close(descriptor)
            return nil
        }
        self.descriptor = descriptor
        self.base = UnsafeRawPointer(mapping)
    }

    deinit {
        munmap(UnsafeMutableRawPointer(mutating: self.base), Self.mappedBytes)
        close(self.descriptor)
    }

    /// The current mark, or `nil` while a commit is being published (the header's two copies
    /// differ) or the index is not initialized: no mark is then equal to any other.
    func mark() -> Mark? {
        var mark = Mark(words: (0, 0, 0, 0, 0, 0, 0))
        let complete = withUnsafeMutablePointer(to: &mark.words) { words in
            words.withMemoryRebound(to: UInt64.self, capacity: 7) { cpanza_wal_index_mark(self.base, $0) }
        }
        return complete == 1 ? mark : nil
    }
}
