#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// How often this process has waited for the disk, from `getrusage`: its major page faults (a
/// page of a memory-mapped file that was not in memory) plus its block input operations (a `read`
/// of pages the page cache did not hold).
///
/// A lookup that is slow because the machine is busy (its thread was preempted) reads nothing from
/// the disk; one that is slow because the file is cold does. See `InlineReaderPool`.
enum DiskReads {
    /// The count so far, or `nil` when `getrusage` fails.
    static func count() -> Int? {
        var usage = rusage()
        #if canImport(Glibc)
            let who = __rusage_who_t(RUSAGE_SELF.rawValue)
        #else
            let who = RUSAGE_SELF
        #endif
        guard getrusage(who, &usage) == 0 else { return nil }
        return Int(usage.ru_majflt) + Int(usage.ru_inblock)
    }
}
