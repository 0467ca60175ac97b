import Synchronization

/// Counters that threads add to without sharing a cache line: each CPU adds to a stripe of its own
/// (``CurrentCPU``), and a read sums the stripes.
///
/// Counters bumped on every cache hit are striped: one atomic counter that two cores add to moves
/// its cache line between them on every hit, which costs more than the hit itself. The counters
/// live in one allocation that the table owns, reached through a `let` pointer: adding to one
/// retains nothing (a retain writes the reference count of a shared object, which is that same
/// cache-line traffic again).
final class StripedCounters: @unchecked Sendable {
    /// Stripes; CPUs beyond this many share them.
    private static let stripeCount = 16
    /// 16 counters (128 bytes) per block: a stripe's block never shares a cache line, nor the
    /// neighbouring line the adjacent-line prefetcher fetches with it, with another stripe's.
    private static let block = 16

    /// How many counters the table holds.
    let count: Int
    /// `stripeCount` stripes of `stride` counters each, 128-byte aligned.
    private let cells: UnsafeMutablePointer<Atomic<Int>>
    private let stride: Int

    init(count: Int) {
        precondition(count > 0)
        self.count = count
        self.stride = (count + Self.block - 1) / Self.block * Self.block
        let total = Self.stripeCount * self.stride
        let raw = UnsafeMutableRawPointer.allocate(
            byteCount: total * MemoryLayout<Atomic<Int>>.stride, alignment: 128)
        self.cells = raw.bindMemory(to: Atomic<Int>.self, capacity: total)
        for index in 0..<total { (self.cells + index).initialize(to: Atomic(0)) }
    }

    deinit {
        self.cells.deinitialize(count: Self.stripeCount * self.stride)
        UnsafeMutableRawPointer(self.cells).deallocate()
    }

    /// Adds `amount` to `counter` (`0..<count`) in the calling CPU's stripe.
    @inline(__always)
    func add(_ counter: Int, _ amount: Int = 1) {
        precondition(counter >= 0 && counter < self.count)
        let stripe = CurrentCPU.index & (Self.stripeCount - 1)
        self.cells[stripe &* self.stride &+ counter].wrappingAdd(amount, ordering: .relaxed)
    }

    /// The sum of `counter`'s stripes: exact once the adders are done, a moment's snapshot while
    /// they run.
    func load(_ counter: Int) -> Int {
        precondition(counter >= 0 && counter < self.count)
        var sum = 0
        for stripe in 0..<Self.stripeCount {
            sum &+= self.cells[stripe &* self.stride &+ counter].load(ordering: .relaxed)
        }
        return sum
    }
}
