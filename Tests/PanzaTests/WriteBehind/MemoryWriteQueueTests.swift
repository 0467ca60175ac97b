import Testing

@testable import Panza

/// What a write-behind queue shows readers (``MemoryWriteQueue/shadow(forKey:)``) while its
/// operations are queued, applied, or dead-lettered; idle, a read takes no lock.
struct MemoryWriteQueueTests {
    let queue = MemoryWriteQueue(
        tierName: "sqlite", maxPending: 100, maxPendingBytes: 1 << 20, isPermanent: { _ in true }, applier: { _ in })
    var version: UInt64 = 0

    func key(_ name: String, namespace: String = "ns") -> CacheKey { CacheKey(namespace: namespace, rawValue: name) }

    mutating func enqueue(_ operation: CacheTierOperation) {
        self.version += 1
        #expect(self.queue.enqueue(operation, version: self.version, replicate: false) != nil)
    }

    /// Applies the head of the queue (as the drainer does once the tier holds it).
    func completeHead() { _ = self.queue.complete(self.queue.claim(limit: 1)) }

    /// Gives the head of the queue up (as the drainer does on a permanent error).
    func deadLetterHead() {
        let head = self.queue.claim(limit: 1)
        try! #require(head.count == 1)
        _ = self.queue.deadLetter(head[0], error: PanzaError(code: .databaseBusy, message: "test"))
    }

    @Test("Idle, a queued store shows its bytes until applied, then idle again")
    mutating func storeThenApplied() {
        #expect(self.queue.shadow(forKey: self.key("a")) == .none)
        self.enqueue(.store(key: self.key("a"), blob: [1, 2], expiresAtMilliseconds: nil))
        #expect(self.queue.shadow(forKey: self.key("a")) == .stored([1, 2]))
        #expect(self.queue.shadow(forKey: self.key("b")) == .none)
        self.completeHead()
        #expect(self.queue.shadow(forKey: self.key("a")) == .none)
    }

    @Test("A queued removal of a namespace or of everything hides keys until applied")
    mutating func scopedRemovals() {
        self.enqueue(.removeNamespace("ns"))
        #expect(self.queue.shadow(forKey: self.key("a")) == .removed)
        #expect(self.queue.shadow(forKey: self.key("a", namespace: "other")) == .none)
        self.enqueue(.removeAll)
        #expect(self.queue.shadow(forKey: self.key("a", namespace: "other")) == .removed)
        self.completeHead()
        #expect(self.queue.shadow(forKey: self.key("a", namespace: "other")) == .removed, "removeAll still queued")
        self.completeHead()
        #expect(self.queue.shadow(forKey: self.key("a")) == .none)
    }

    @Test("A dead-lettered removal keeps hiding its key once the queue is empty, until a write of it lands")
    mutating func poisonOutlivesTheQueue() {
        self.enqueue(.remove(self.key("a")))
        self.deadLetterHead()
        #expect(self.queue.pendingCount == 0)
        #expect(self.queue.shadow(forKey: self.key("a")) == .removed, "the tier may still hold the old value")
        #expect(self.queue.shadow(forKey: self.key("b")) == .none)
        self.enqueue(.store(key: self.key("a"), blob: [3], expiresAtMilliseconds: nil))
        self.completeHead()
        #expect(self.queue.shadow(forKey: self.key("a")) == .none, "a newer value reached the tier")
    }
}
