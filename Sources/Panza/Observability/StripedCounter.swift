import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// A counter that threads add to without sharing a cache line: each thread adds to one of several
/// padded cells, chosen by the thread's identity, and a read sums the cells.
///
/// Counters bumped on every cache hit are striped: one atomic counter that two cores add to moves
/// its cache line between them on every hit, which costs more than the hit itself.
final class StripedCounter: Sendable {
    private let cells: InlineArray<16, CacheLinePadded<Atomic<Int>>>

    init() {
        self.cells = InlineArray { _ in CacheLinePadded(Atomic(0)) }
    }

    /// Adds `amount` to the calling thread's cell.
    @inline(__always)
    func add(_ amount: Int = 1) {
        self.cells[Self.currentStripe].value.add(amount, ordering: .relaxed)
    }

    /// The sum of every cell: exact once the adders are done, a moment's snapshot while they run.
    func load() -> Int {
        var sum = 0
        for index in self.cells.indices { sum &+= self.cells[index].value.load(ordering: .relaxed) }
        return sum
    }

    /// The cell of the calling thread: a mix of its `pthread_t` (the address of its descriptor).
    @inline(__always)
    static var currentStripe: Int {
        let identity = UInt64(UInt(bitPattern: Int(bitPattern: pthread_self())))
        return Int(truncatingIfNeeded: (identity &* 0x9E37_79B9_7F4A_7C15) >> 60)
    }
}
