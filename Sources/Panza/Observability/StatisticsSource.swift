/// What ``TieredCache/statistics`` reads, apart from the cache itself.
struct StatisticsSource: Sendable {
    let recorder: StatisticsRecorder
    let lanes: [Lane]
    let slots: [TierSlot]
    let memory: MemoryTier?

    func snapshot() -> CacheStatistics {
        var statistics = self.recorder.snapshot()
        statistics.pendingWrites = self.lanes.reduce(0) { $0 + $1.queue.pendingCount }
        statistics.pendingBytes = self.lanes.reduce(0) { $0 + $1.queue.pendingBytes }
        for slot in self.slots {
            if let readGuard = slot.readGuard { statistics.tiers[slot.tier.name]?.breaker = readGuard.state }
        }
        if let memory = self.memory {
            statistics.memoryEntries = memory.count
            statistics.memoryBytes = memory.bytes
        }
        return statistics
    }
}
