import Testing

@testable import Panza

struct MemoryTierTests {
    func entry(_ value: Int, cost: Int = 10, namespace: String = "", expiresAt: Int64? = nil) -> MemoryTier.Entry {
        .make(
            value: value, cost: cost, storedBytes: cost, namespace: namespace,
            times: EntryTimes(
                createdAtMilliseconds: 0, timeToLiveMilliseconds: expiresAt ?? 0, staleForMilliseconds: 0))
    }

    func value(_ tier: MemoryTier, _ key: String, now: Int64 = 0) -> Int? {
        if case .hit(let value, _, _) = tier.lookup(key, nowMilliseconds: now) { return value as? Int }
        return nil
    }

    func fastKey(_ key: String) -> MemoryFastKey { MemoryFastKey(function: 0, bytes: Array("fast:\(key)".utf8)) }

    /// Attaches `key`'s fast key to its entry and looks the entry up by it: whether that was a hit.
    func attachAndHit(_ tier: MemoryTier, _ key: String) -> Bool {
        tier.attach(self.fastKey(key), toKey: key)
        return tier.entry(fast: self.fastKey(key)) != nil
    }

    class Base: @unchecked Sendable {}
    final class Derived: Base, @unchecked Sendable {}

    @Test("An entry gives its value as its own type, a supertype or an optional, and never as another type")
    func typedEntries() {
        let times = EntryTimes(createdAtMilliseconds: 0, timeToLiveMilliseconds: 0, staleForMilliseconds: 0)
        let number = MemoryTier.Entry.make(value: 42, cost: 1, storedBytes: 1, namespace: "", times: times)
        #expect(number.value(as: Int.self) == 42)
        #expect(number.value(as: Int?.self) == .some(42))
        #expect(number.value(as: String.self) == nil)
        #expect(number.value(as: Int64.self) == nil)
        let derived = Derived()
        let object = MemoryTier.Entry.make(value: derived as Base, cost: 1, storedBytes: 1, namespace: "", times: times)
        #expect(object.value(as: Base.self) === derived)
        #expect(object.value(as: Derived.self) === derived)
        #expect(object.value(as: Int.self) == nil)
        let existential = MemoryTier.Entry.make(
            value: [1, 2] as any Sendable, cost: 1, storedBytes: 1, namespace: "", times: times)
        #expect(existential.value(as: [Int].self) == [1, 2])
    }

    @Test("The entry bound evicts the least recently used")
    func entryBound() throws {
        let tier = try MemoryTier(configuration: .init(maxEntries: 3, maxBytes: 1 << 20))
        for index in 0..<3 { tier.insert(entry(index), forKey: "k\(index)") }
        #expect(value(tier, "k0") == 0)  // k0 is now the most recently used
        tier.insert(entry(3), forKey: "k3")
        #expect(tier.count == 3)
        #expect(value(tier, "k1") == nil)
        #expect(tier.keysByRecency() == ["k3", "k0", "k2"])
        tier._checkInvariants()
    }

    @Test("The byte bound evicts until the total fits")
    func byteBound() throws {
        let tier = try MemoryTier(configuration: .init(maxEntries: 100, maxBytes: 100, maxEntryBytes: 100))
        for index in 0..<5 { tier.insert(entry(index, cost: 20), forKey: "k\(index)") }
        #expect(tier.bytes == 100)
        let evicted = tier.insert(entry(5, cost: 50), forKey: "big")
        #expect(evicted == 3)
        #expect(tier.bytes == 90)
        #expect(tier.keysByRecency() == ["big", "k4", "k3"])
        tier._checkInvariants()
    }

    @Test("An entry larger than the byte bound is not held, and drops its older version")
    func oversizedEntry() throws {
        let tier = try MemoryTier(configuration: .init(maxEntries: 10, maxBytes: 100, maxEntryBytes: 100))
        tier.insert(entry(1, cost: 10), forKey: "k")
        tier.insert(entry(2, cost: 101), forKey: "k")
        #expect(value(tier, "k") == nil)
        #expect(tier.bytes == 0)
        tier._checkInvariants()
    }

    @Test("Replacing an entry updates its cost")
    func replacement() throws {
        let tier = try MemoryTier(configuration: .init(maxEntries: 10, maxBytes: 100, maxEntryBytes: 100))
        tier.insert(entry(1, cost: 10), forKey: "k")
        tier.insert(entry(2, cost: 30), forKey: "k")
        #expect(tier.bytes == 30)
        #expect(tier.count == 1)
        #expect(value(tier, "k") == 2)
        tier._checkInvariants()
    }

    @Test("Expired entries are misses and are removed")
    func expiry() throws {
        let tier = try MemoryTier(configuration: .init())
        tier.insert(entry(1, expiresAt: 1000), forKey: "k")
        #expect(value(tier, "k", now: 999) == 1)
        guard case .expired = tier.lookup("k", nowMilliseconds: 1000) else {
            Issue.record("expected an expired lookup")
            return
        }
        #expect(tier.count == 0)
    }

    @Test("Removing a namespace keeps the others")
    func namespaces() throws {
        let tier = try MemoryTier(configuration: .init())
        tier.insert(entry(1, namespace: "a"), forKey: "a/1")
        tier.insert(entry(2, namespace: "b"), forKey: "b/1")
        tier.insert(entry(3, namespace: "a"), forKey: "a/2")
        tier.removeNamespace("a")
        #expect(tier.keysByRecency() == ["b/1"])
        tier._checkInvariants()
    }

    @Test("Random operations keep the structure consistent and within bounds")
    func randomOperations() throws {
        let tier = try MemoryTier(configuration: .init(maxEntries: 50, maxBytes: 2_000))
        var generator = SplitMix64(seed: 7)
        for step in 0..<20_000 {
            let key = "k\(Int.random(in: 0..<200, using: &generator))"
            switch Int.random(in: 0..<10, using: &generator) {
            case 0..<5: tier.insert(entry(step, cost: Int.random(in: 1...120, using: &generator)), forKey: key)
            case 5..<9: _ = tier.lookup(key, nowMilliseconds: 0)
            default: tier.remove(key)
            }
            #expect(tier.count <= 50 && tier.bytes <= 2_000)
            if step % 500 == 0 { tier._checkInvariants() }
        }
        tier._checkInvariants()
    }

    @Test("The fast index never finds an entry that was removed, evicted, replaced or moved to another slot")
    func fastIndexAgainstModel() throws {
        let tier = try MemoryTier(configuration: .init(maxEntries: 40, maxBytes: 100_000))
        var generator = SplitMix64(seed: 11)
        // Each key's value in the tier as the model knows it, and whether its fast key is attached.
        var model: [String: Int] = [:]
        var attached: Set<String> = []
        for step in 0..<30_000 {
            let key = "k\(Int.random(in: 0..<120, using: &generator))"
            switch Int.random(in: 0..<12, using: &generator) {
            case 0..<3:
                tier.insert(entry(step), forKey: key)
                model[key] = step
                attached.remove(key)  // a replaced entry drops its fast key
                // Evictions: the model forgets what the tier no longer holds.
                let held = Set(tier.keysByRecency())
                for stale in model.keys where !held.contains(stale) {
                    model[stale] = nil
                    attached.remove(stale)
                }
            case 3..<5:
                tier.attach(self.fastKey(key), toKey: key)
                if model[key] != nil { attached.insert(key) }
            case 5..<11:
                let found = tier.entry(fast: self.fastKey(key))?.value as? Int
                // Found only through an attachment of the entry it holds now, with its value.
                #expect(found == (attached.contains(key) ? model[key] : nil), "step \(step), key \(key)")
            default:
                tier.remove(key)
                model[key] = nil
                attached.remove(key)
            }
            if step % 1_000 == 0 { tier._checkInvariants() }
        }
        tier.removeAll()
        #expect(tier.count == 0)
        tier._checkInvariants()
    }

    @Test("A hit through the fast index earns its entry a second chance at eviction")
    func secondChance() throws {
        let tier = try MemoryTier(configuration: .init(maxEntries: 3, maxBytes: 1 << 20))
        for index in 0..<3 { tier.insert(entry(index), forKey: "k\(index)") }
        #expect(self.attachAndHit(tier, "k0"), "the attached entry was not found")
        #expect(tier.keysByRecency() == ["k2", "k1", "k0"], "a fast hit moved the entry")
        tier.insert(entry(3), forKey: "k3")
        #expect(tier.keysByRecency() == ["k0", "k3", "k2"])
        // The chance is spent: without another hit, k0 ages like any other entry.
        tier.insert(entry(4), forKey: "k4")
        tier.insert(entry(5), forKey: "k5")
        tier.insert(entry(6), forKey: "k6")
        #expect(tier.keysByRecency() == ["k6", "k5", "k4"])
        tier._checkInvariants()
    }

    @Test("The entry inserted is never evicted, even when every other entry has a second chance")
    func insertedEntrySurvivesSecondChances() throws {
        let tier = try MemoryTier(configuration: .init(maxEntries: 2, maxBytes: 1 << 20))
        for key in ["a", "b"] {
            tier.insert(entry(1), forKey: key)
            #expect(self.attachAndHit(tier, key))
        }
        #expect(tier.insert(entry(2), forKey: "c") == 1)
        #expect(tier.keysByRecency() == ["c", "b"])
        tier._checkInvariants()
    }

    @Test("One insert passes over at most maximumSecondChances referenced entries")
    func secondChancesAreBounded() throws {
        let count = MemoryTier.maximumSecondChances + 10
        let tier = try MemoryTier(configuration: .init(maxEntries: count, maxBytes: 1 << 20))
        for index in 0..<count {
            tier.insert(entry(index), forKey: "k\(index)")
            #expect(self.attachAndHit(tier, "k\(index)"))
        }
        #expect(tier.insert(entry(-1), forKey: "new") == 1)
        let held = Set(tier.keysByRecency())
        // The oldest entries were moved to the front until the bound, then the next was evicted.
        #expect(!held.contains("k\(MemoryTier.maximumSecondChances)"))
        #expect(held.count == count)
        tier._checkInvariants()
    }

    @Test("Recency and eviction match a reference model of LRU with second chances", arguments: [3, 17])
    func evictionAgainstModel(seed: UInt64) throws {
        let capacity = 12
        let tier = try MemoryTier(configuration: .init(maxEntries: capacity, maxBytes: 1 << 20))
        var generator = SplitMix64(seed: seed)
        // The model: keys from most to least recently used, those referenced, those attached.
        var order: [String] = []
        var referenced: Set<String> = []
        var attached: Set<String> = []
        for step in 0..<20_000 {
            let key = "k\(Int.random(in: 0..<30, using: &generator))"
            switch Int.random(in: 0..<10, using: &generator) {
            case 0..<3:
                tier.insert(entry(step), forKey: key)
                order.removeAll { $0 == key }
                order.insert(key, at: 0)
                referenced.remove(key)
                attached.remove(key)
                var chances = 0
                while order.count > capacity {
                    let candidate = order.removeLast()
                    if candidate == key || (chances < MemoryTier.maximumSecondChances && referenced.contains(candidate))
                    {
                        if candidate != key { chances += 1 }
                        referenced.remove(candidate)
                        order.insert(candidate, at: 0)
                    } else {
                        referenced.remove(candidate)
                        attached.remove(candidate)
                    }
                }
            case 3..<5:
                let hit: Bool = if case .hit = tier.lookup(key, nowMilliseconds: 0) { true } else { false }
                if hit != order.contains(key) {
                    #expect(hit == order.contains(key), "step \(step)")
                    return
                }
                if hit {
                    order.removeAll { $0 == key }
                    order.insert(key, at: 0)
                }
            case 5:
                tier.attach(self.fastKey(key), toKey: key)
                if order.contains(key) { attached.insert(key) }
            case 6..<9:
                let hit = tier.entry(fast: self.fastKey(key)) != nil
                if hit != attached.contains(key) {
                    #expect(hit == attached.contains(key), "step \(step)")
                    return
                }
                if hit { referenced.insert(key) }
            default:
                tier.remove(key)
                order.removeAll { $0 == key }
                referenced.remove(key)
                attached.remove(key)
            }
            // One expectation for the whole run: 20,000 of them would hold the test runner's threads.
            let held = tier.keysByRecency()
            if held != order {
                #expect(held == order, "step \(step)")
                return
            }
        }
        tier._checkInvariants()
    }

    @Test("Fast hits on many tasks beside inserts and removals keep the tier consistent", .timeLimit(.minutes(1)))
    func concurrentFastHits() async throws {
        let tier = try MemoryTier(configuration: .init(maxEntries: 64, maxBytes: 1 << 20))
        let keys = (0..<128).map { "k\($0)" }
        // Each task counts the hits that returned another key's value; the tasks yield often, so
        // that the tests running beside this one keep their share of the cooperative threads.
        let foreign = await withTaskGroup(of: Int.self) { group in
            for task in 0..<8 {
                group.addTask {
                    var generator = SplitMix64(seed: UInt64(task))
                    var foreign = 0
                    for step in 0..<5_000 {
                        if step % 100 == 0 { await Task.yield() }
                        let keyIndex = Int.random(in: 0..<keys.count, using: &generator)
                        let key = keys[keyIndex]
                        let fast = self.fastKey(key)
                        switch Int.random(in: 0..<10, using: &generator) {
                        case 0: tier.insert(self.entry(keyIndex * 1_000_000 + step), forKey: key)
                        case 1: tier.attach(fast, toKey: key)
                        case 2: tier.remove(key)
                        default:
                            if let entry = tier.entry(fast: fast),
                                (entry.value as? Int).map({ $0 / 1_000_000 }) != keyIndex
                            {
                                foreign += 1
                            }
                        }
                    }
                    return foreign
                }
            }
            return await group.reduce(0, +)
        }
        #expect(foreign == 0, "a fast hit returned another key's value")
        #expect(tier.count <= 64)
        tier._checkInvariants()
    }

    @Test("Bounds must be positive")
    func invalidBounds() {
        #expect(throws: PanzaError.self) { try MemoryTier(configuration: .init(maxEntries: 0, maxBytes: 1)) }
    }

    @Test("An entry over maxEntryBytes (an eighth of maxBytes by default) is not held and evicts nothing")
    func entryLimit() throws {
        let tier = try MemoryTier(configuration: .init(maxEntries: 100, maxBytes: 800))
        #expect(tier.configuration.entryLimit == 100)
        for index in 0..<7 { tier.insert(self.entry(index, cost: 100), forKey: "small\(index)") }
        tier.insert(self.entry(99, cost: 101), forKey: "large")
        #expect(self.value(tier, "large") == nil)
        #expect((0..<7).allSatisfy { self.value(tier, "small\($0)") != nil }, "a large value evicted small ones")
        let roomy = try MemoryTier(configuration: .init(maxEntries: 100, maxBytes: 800, maxEntryBytes: 500))
        roomy.insert(self.entry(1, cost: 400), forKey: "large")
        #expect(self.value(roomy, "large") == 1)
    }
}
