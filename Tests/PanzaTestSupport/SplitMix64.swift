/// SplitMix64: a small seeded generator, so that randomized tests repeat from their seed, the
/// same in the tests and in the child processes they start.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public var state: UInt64

    public init(seed: UInt64) { self.state = seed }

    public mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A double in [0, 1).
    public mutating func nextDouble() -> Double { Double(self.next() >> 11) / Double(UInt64(1) << 53) }

    /// An integer in [0, bound).
    public mutating func below(_ bound: Int) -> Int { Int(self.next() % UInt64(bound)) }
}
