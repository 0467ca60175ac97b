import Testing

@testable import Panza

/// The fence that keeps a copy from a lower tier (a fill) from landing over a newer write.
struct VersionFenceTests {
    let fence = VersionFence()

    func store(_ key: String, namespace: String = "") {
        _ = try! self.fence.write(
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
        _ = try! self.fence.write(.removeNamespace("ns")) { _ in }
        #expect(!self.fills("ns/k", namespace: "ns", ticket))
        #expect(self.fills("other/k", namespace: "other", ticket))
        _ = try! self.fence.write(.removeAll) { _ in }
        #expect(!self.fills("other/k", namespace: "other", ticket))
        self.fence.endRead(ticket)
        let later = self.fence.beginRead()
        #expect(self.fills("ns/k", namespace: "ns", later))
        self.fence.endRead(later)
    }
}

struct VersionFenceLoadTests {
    let fence = VersionFence()

    func store(_ key: String, namespace: String = "", if ticket: VersionFence.LoadTicket? = nil) throws -> Bool {
        try self.fence.write(
            .store(key: CacheKey(namespace: namespace, rawValue: key), blob: [], expiresAtMilliseconds: nil),
            ifUnchangedSince: ticket
        ) { _ in true } ?? false
    }

    @Test("A load's store lands only if no write of its key, namespace or everything came after its ticket")
    func loadTickets() throws {
        let key = CacheKey(namespace: "ns", rawValue: "k")
        let clean = self.fence.beginLoad(key)
        #expect(try self.store("other", namespace: "ns"))
        #expect(try self.store("k", namespace: "ns", if: clean), "a write of another key does not matter")
        self.fence.endLoad(clean)

        let overtaken = self.fence.beginLoad(key)
        #expect(try self.store("k", namespace: "ns"))
        #expect(try !self.store("k", namespace: "ns", if: overtaken))
        self.fence.endLoad(overtaken)

        let busted = self.fence.beginLoad(key)
        _ = try self.fence.write(.removeNamespace("ns")) { _ in }
        #expect(try !self.store("k", namespace: "ns", if: busted))
        self.fence.endLoad(busted)
        #expect(self.fence.watchedKeyCount == 0)
    }

    @Test("A load watches one key however many writes come while it runs: the lookup log stays empty")
    func loadsDoNotPinTheLog() throws {
        let ticket = self.fence.beginLoad(CacheKey(rawValue: "slow"))
        for index in 0..<10_000 { _ = try self.store("k\(index)") }
        #expect(self.fence.logCount == 0)
        #expect(self.fence.watchedKeyCount == 1)
        self.fence.endLoad(ticket)
    }

    @Test("After close() every write throws .closed, and fills do not run")
    func closedFence() throws {
        let ticket = self.fence.beginRead()
        #expect(self.fence.close())
        #expect(!self.fence.close())
        #expect(throws: PanzaError.self) { try self.store("k") }
        #expect(!self.fence.fill(CacheKey(rawValue: "k"), ticket: ticket) {})
        self.fence.endRead(ticket)
    }
}
