import Testing

@testable import Panza

/// The fence that keeps a copy from a lower tier (a fill) from landing over a newer write.
struct VersionFenceTests {
    let fence = VersionFence()

    func store(_ key: String, namespace: String = "") {
        _ = self.fence.write(
            .store(key: CacheKey(namespace: namespace, rawValue: key), blob: [], expiresAtMilliseconds: nil)
        ) { _ in }
    }

    func fills(_ key: String, namespace: String = "", _ ticket: VersionFence.Ticket) -> Bool {
        self.fence.fill(CacheKey(namespace: namespace, rawValue: key), ticket: ticket) {}
    }

    @Test("A write of the key after a lookup started refuses its fill; other keys fill")
    func writeAfterTicket() {
        let ticket = self.fence.beginRead()
        self.store("k")
        #expect(!self.fills("k", ticket))
        #expect(self.fills("other", ticket))
        self.fence.endRead(ticket)
        let later = self.fence.beginRead()
        #expect(self.fills("k", later), "the write came before this lookup started")
        self.fence.endRead(later)
    }

    @Test("A write is remembered while any lookup that started before it is in flight, whichever ends first")
    func overlappingLookups() {
        let first = self.fence.beginRead()
        let shared = self.fence.beginRead()
        self.store("a")
        let second = self.fence.beginRead()
        self.store("b")
        self.fence.endRead(first)
        #expect(!self.fills("a", shared))
        #expect(self.fills("a", second))
        #expect(!self.fills("b", second))
        self.fence.endRead(shared)
        #expect(!self.fills("b", second), "still remembered for the lookup in flight since before it")
        let third = self.fence.beginRead()
        #expect(self.fills("b", third))
        self.fence.endRead(second)
        self.fence.endRead(third)
    }

    @Test("Many lookups of one version end in any order, and a write among them is remembered until the last")
    func manyLookupsOfOneVersion() {
        var tickets = (0..<50).map { _ in self.fence.beginRead() }
        self.store("k")
        var generator = SplitMix64(seed: 7)
        while tickets.count > 1 {
            let ticket = tickets.remove(at: Int(generator.next() % UInt64(tickets.count)))
            self.fence.endRead(ticket)
            #expect(!self.fills("k", tickets[0]))
        }
        self.fence.endRead(tickets[0])
    }

    @Test("A removal of the namespace or of everything refuses the fills of lookups that started before it")
    func scopeRemovals() {
        let ticket = self.fence.beginRead()
        _ = self.fence.write(.removeNamespace("ns")) { _ in }
        #expect(!self.fills("ns/k", namespace: "ns", ticket))
        #expect(self.fills("other/k", namespace: "other", ticket))
        _ = self.fence.write(.removeAll) { _ in }
        #expect(!self.fills("other/k", namespace: "other", ticket))
        self.fence.endRead(ticket)
        let later = self.fence.beginRead()
        #expect(self.fills("ns/k", namespace: "ns", later))
        self.fence.endRead(later)
    }
}
