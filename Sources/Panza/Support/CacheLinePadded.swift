/// A value followed by 120 bytes of padding, so that values in neighbouring slots of an array are
/// never on the same cache line, nor on the neighbouring line that the adjacent-line prefetcher
/// fetches with it: two cores writing two slots do not pass a line back and forth.
struct CacheLinePadded<Value: ~Copyable>: ~Copyable {
    let value: Value
    private let padding: (Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int) = (
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
    )

    init(_ value: consuming Value) {
        self.value = value
    }
}

extension CacheLinePadded: Sendable where Value: Sendable & ~Copyable {}
