import Foundation

/// Which configuration `panza bench` recommends: the cheapest that meets what the user asked for,
/// where cost counts the loader calls left and the memory and disk the configuration holds, and
/// latency breaks ties.
struct BenchRecommendation: Codable, Sendable {
    /// What the user asked for.
    struct Goals: Codable, Sendable {
        /// The largest p99 accepted, in microseconds; `nil` for any.
        var targetP99Microseconds: Double?
        /// The largest memory tier accepted, in bytes; `nil` for any.
        var memoryBudget: Int?
        /// What one loader call costs.
        var loaderCost: Double
        /// What a GiB of memory tier costs, for the run's duration scaled to its operations.
        var memoryCostPerGiB: Double
        /// What a GiB stored on disk (SQLite) costs.
        var diskCostPerGiB: Double
    }

    /// The configuration recommended; `nil` when none meets the goals.
    var result: BenchResult?
    /// The cost of each configuration, in the order of the results.
    var costs: [Double]
    /// Why this one (or why none), in one sentence.
    var reason: String

    /// The cost of a configuration: its loader calls, its memory bound and the bytes it stored.
    static func cost(of result: BenchResult, goals: Goals) -> Double {
        let gib = Double(1 << 30)
        return Double(result.loaderCalls) * goals.loaderCost
            + Double(result.setup.memoryBytes ?? 0) / gib * goals.memoryCostPerGiB
            + Double(result.setup.sqliteBytes == nil ? 0 : result.bytesStored) / gib * goals.diskCostPerGiB
    }

    /// Among the configurations that meet the goals, and that serve as many reads as the best one
    /// (within half a percentage point: with an injected outage, failed reads are not a saving),
    /// the cheapest; configurations within 1% of the
    /// cheapest cost tie, and the tie goes to the lowest p50 (the typical call; a p99 is mostly
    /// the loader's), then the lowest p99, then the least memory. So a memory tier that costs next
    /// to nothing beside the loader calls it saves is recommended over a configuration as cheap
    /// whose typical call is 100 times slower.
    static func choose(from results: [BenchResult], goals: Goals) -> BenchRecommendation {
        let costs = results.map { self.cost(of: $0, goals: goals) }
        let bestSuccess = results.map(\.successRatio).max() ?? 1
        let eligible = results.indices.filter { index in
            let result = results[index]
            if result.successRatio < bestSuccess - 0.005 { return false }
            if let target = goals.targetP99Microseconds, result.p99Microseconds > target { return false }
            if let budget = goals.memoryBudget, (result.setup.memoryBytes ?? 0) > budget { return false }
            return true
        }
        guard let cheapest = eligible.map({ costs[$0] }).min() else {
            var missed: [String] = []
            if let target = goals.targetP99Microseconds { missed.append("a p99 under \(Self.format(target)) µs") }
            if let budget = goals.memoryBudget { missed.append("memory within \(Output.bytes(budget))") }
            return BenchRecommendation(
                result: nil, costs: costs,
                reason: "no configuration meets " + missed.joined(separator: " and ")
                    + "; the fastest p99 was \(Self.format(results.map(\.p99Microseconds).min() ?? 0)) µs")
        }
        let tied = eligible.filter { costs[$0] <= cheapest * 1.01 + 1e-12 }
        let chosen = tied.min { lhs, rhs in
            let (a, b) = (results[lhs], results[rhs])
            if a.p50Microseconds != b.p50Microseconds { return a.p50Microseconds < b.p50Microseconds }
            if a.p99Microseconds != b.p99Microseconds { return a.p99Microseconds < b.p99Microseconds }
            return (a.setup.memoryBytes ?? 0) < (b.setup.memoryBytes ?? 0)
        }!
        var reason = "the cheapest (cost \(Self.format(costs[chosen]))"
        if tied.count > 1 { reason += ", tied within 1% with \(tied.count - 1) other(s), and the fastest of those" }
        reason += ")"
        if goals.targetP99Microseconds != nil || goals.memoryBudget != nil { reason += " that meets the goals" }
        if bestSuccess < 1 {
            reason += " among those that served \(String(format: "%.1f%%", bestSuccess * 100)) of reads"
        }
        return BenchRecommendation(result: results[chosen], costs: costs, reason: reason)
    }

    private static func format(_ value: Double) -> String {
        value >= 100 ? String(format: "%.0f", value) : String(format: "%.3g", value)
    }
}
