import Foundation
import Testing

@testable import Panza

/// The per-CPU counters behind the cache's statistics: exact sums once the adders are done, each
/// counter its own.
struct StripedCountersTests {
    @Test("Adds from many threads at once sum exactly, counter by counter")
    func concurrentAddsSumExactly() {
        let counters = StripedCounters(count: 20)
        let threads = 8
        let adds = 20_000
        DispatchQueue.concurrentPerform(iterations: threads) { thread in
            for index in 0..<adds {
                counters.add(index % 3)  // counters 0, 1, 2 by ones
                counters.add(19, thread + 1)  // the last counter, by each thread's amount
            }
        }
        #expect(counters.load(0) + counters.load(1) + counters.load(2) == threads * adds)
        #expect(counters.load(0) == threads * ((adds + 2) / 3))
        #expect(counters.load(19) == adds * (1...threads).reduce(0, +))
        for untouched in 3..<19 { #expect(counters.load(untouched) == 0) }
    }

    @Test("The statistics recorder keeps each tier's counters apart from the cache's and the other tiers'")
    func recorderLayout() {
        let recorder = StatisticsRecorder(tierNames: ["sqlite", "s3"])
        recorder.tierHit(0)
        recorder.tierHit(0)
        recorder.tierMiss(1)
        recorder.tierSlow(1)
        recorder.add(.memoryHits, 5)
        recorder.add(.bytesRead, 1_000)
        let snapshot = recorder.snapshot()
        #expect(snapshot.tiers["sqlite"]?.hits == 2)
        #expect(snapshot.tiers["sqlite"]?.misses == 0)
        #expect(snapshot.tiers["s3"]?.hits == 0)
        #expect(snapshot.tiers["s3"]?.misses == 1)
        #expect(snapshot.tiers["s3"]?.slow == 1)
        #expect(snapshot.memory.hits == 5)
        #expect(snapshot.bytesRead == 1_000)
        #expect(snapshot.loads == 0)
    }

    @Test("The current CPU is a small non-negative number")
    func currentCPU() {
        let cpu = CurrentCPU.index
        #expect(cpu >= 0)
        #expect(cpu < 1 << 16)
    }
}
