import Foundation

/// A synthetic workload: which keys are asked for, how large their values are, how slow the loader is.
struct BenchWorkload: Sendable, Codable {
    /// Distinct keys.
    var keys: Int
    /// Zipf exponent of key popularity (0: uniform; 1: classic web traffic).
    var skew: Double
    /// Value sizes in bytes.
    var valueSizes: ValueSizes
    /// Fraction of operations that are writes (`set`) instead of memoized reads.
    var writeFraction: Double
    /// How long one loader call takes.
    var loaderLatencyMilliseconds: Double
    /// How long entries live; `nil` for ever.
    var timeToLiveMilliseconds: Double? = nil
    /// The part of the run, as fractions of its operations, during which every loader call fails.
    var outage: ClosedRange<Double>? = nil
    /// What one loader call costs (in any currency), to value the calls saved.
    var loaderCost: Double
    /// Tasks issuing operations at once.
    var concurrency: Int
    /// Operations per tier configuration.
    var operations: Int
    var seed: UInt64

    /// Fixed sizes, or a uniform range.
    struct ValueSizes: Sendable, Codable, CustomStringConvertible {
        var minimum: Int
        var maximum: Int

        /// `1024` or `256-4096`.
        init?(_ text: String) {
            let parts = text.split(separator: "-").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard (1...2).contains(parts.count), let first = parts.first, first > 0 else { return nil }
            self.minimum = first
            self.maximum = parts.count == 2 ? parts[1] : first
            guard self.maximum >= self.minimum else { return nil }
        }

        var mean: Double { Double(self.minimum + self.maximum) / 2 }
        var description: String {
            self.minimum == self.maximum ? "\(self.minimum) B" : "\(self.minimum)-\(self.maximum) B"
        }
    }

    /// The value size of key `index`, fixed for the run.
    func valueSize(ofKey index: Int) -> Int {
        guard self.valueSizes.maximum > self.valueSizes.minimum else { return self.valueSizes.minimum }
        var generator = BenchRandom(seed: self.seed ^ UInt64(index) &* 0x9E37_79B9)
        return Int.random(in: self.valueSizes.minimum...self.valueSizes.maximum, using: &generator)
    }

    /// A realistic JSON document of about `size` bytes (an LLM completion), so that compression is honest.
    static func json(key index: Int, size: Int) -> String {
        let words = [
            "the", "cache", "forecast", "model", "token", "request", "latency", "Oslo", "answer", "tier", "shared",
            "budget",
        ]
        var generator = BenchRandom(seed: UInt64(index) &+ 17)
        var text =
            "{\"id\":\"cmpl-\(index)\",\"model\":\"bench-1\",\"usage\":{\"prompt_tokens\":\(index % 500),\"completion_tokens\":\(size / 5)},\"text\":\""
        while text.utf8.count < size - 2 {
            text += words[Int.random(in: 0..<words.count, using: &generator)]
            text += Int.random(in: 0..<9, using: &generator) == 0 ? ". " : " "
        }
        return text + "\"}"
    }
}

/// Samples key indices with Zipf popularity: key 0 is the most popular.
struct ZipfSampler: Sendable {
    private let cumulative: [Double]

    init(keys: Int, skew: Double) {
        var total = 0.0
        var cumulative: [Double] = []
        cumulative.reserveCapacity(keys)
        for rank in 1...max(keys, 1) {
            total += 1 / pow(Double(rank), skew)
            cumulative.append(total)
        }
        self.cumulative = cumulative.map { $0 / total }
    }

    func sample(using generator: inout BenchRandom) -> Int {
        let target = Double.random(in: 0..<1, using: &generator)
        var low = 0
        var high = self.cumulative.count - 1
        while low < high {
            let middle = (low + high) / 2
            if self.cumulative[middle] < target { low = middle + 1 } else { high = middle }
        }
        return low
    }
}

/// SplitMix64: a small seeded generator, so that runs repeat.
struct BenchRandom: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { self.state = seed }
    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
