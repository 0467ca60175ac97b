/// A hash map threaded on a doubly linked list kept in one array, ordered by recency.
///
/// Nodes live in `nodes` and link to each other by index, so the list allocates only when it
/// grows and freed slots are reused. Not thread-safe: ``MemoryTier`` guards it with a lock.
struct LRUList<Key: Hashable, Element: Costed> {
    private struct Node {
        var key: Key?
        var element: Element?
        var previous: Int  // towards the front (more recent); -1 at the front
        var next: Int  // towards the back (less recent); -1 at the back
    }

    private var nodes: [Node] = []
    private var indices: [Key: Int] = [:]
    private var freeSlots: [Int] = []
    private var head = -1
    private var tail = -1
    private(set) var totalCost = 0

    var count: Int { self.indices.count }

    func index(forKey key: Key) -> Int? { self.indices[key] }

    /// The index of the least recently used entry, `nil` when empty.
    var lastIndex: Int? { self.tail >= 0 ? self.tail : nil }

    subscript(index: Int) -> Element { self.nodes[index].element! }

    /// The element at `index`, or `nil` when the slot is free or out of range.
    func element(at index: Int) -> Element? {
        index >= 0 && index < self.nodes.count ? self.nodes[index].element : nil
    }

    /// Records that the cost of an element held changed by `delta` (its cost is computed).
    mutating func adjustCost(by delta: Int) {
        self.totalCost += delta
    }

    /// Changes the element at an occupied `index` in place (not its cost).
    mutating func update(at index: Int, _ body: (inout Element) -> Void) {
        body(&self.nodes[index].element!)
    }

    /// Calls `body` with the index and element of every entry, from the most recently used.
    func forEachIndexed(_ body: (Int, Element) -> Void) {
        var index = self.head
        while index >= 0 {
            body(index, self.nodes[index].element!)
            index = self.nodes[index].next
        }
    }

    mutating func moveToFront(_ index: Int) {
        guard index != self.head else { return }
        self.unlink(index)
        self.linkAtFront(index)
    }

    mutating func insertAtFront(_ element: Element, forKey key: Key) {
        if let index = self.indices[key] {
            self.totalCost += element.cost - self.nodes[index].element!.cost
            self.nodes[index].element = element
            self.moveToFront(index)
            return
        }
        let node = Node(key: key, element: element, previous: -1, next: -1)
        let index: Int
        if let free = self.freeSlots.popLast() {
            index = free
            self.nodes[index] = node
        } else {
            index = self.nodes.count
            self.nodes.append(node)
        }
        self.indices[key] = index
        self.totalCost += element.cost
        self.linkAtFront(index)
    }

    mutating func remove(at index: Int) {
        self.unlink(index)
        self.totalCost -= self.nodes[index].element!.cost
        self.indices[self.nodes[index].key!] = nil
        self.nodes[index] = Node(key: nil, element: nil, previous: -1, next: -1)
        self.freeSlots.append(index)
    }

    mutating func removeLast() {
        guard self.tail >= 0 else { return }
        self.remove(at: self.tail)
    }

    mutating func removeAll(where shouldRemove: (Element) -> Bool) {
        var index = self.head
        while index >= 0 {
            let next = self.nodes[index].next
            if shouldRemove(self.nodes[index].element!) { self.remove(at: index) }
            index = next
        }
        if self.indices.isEmpty {
            self = LRUList()
        }
    }

    func keysFromFront() -> [Key] {
        var keys: [Key] = []
        var index = self.head
        while index >= 0 {
            keys.append(self.nodes[index].key!)
            index = self.nodes[index].next
        }
        return keys
    }

    private mutating func unlink(_ index: Int) {
        let previous = self.nodes[index].previous
        let next = self.nodes[index].next
        if previous >= 0 { self.nodes[previous].next = next } else { self.head = next }
        if next >= 0 { self.nodes[next].previous = previous } else { self.tail = previous }
        self.nodes[index].previous = -1
        self.nodes[index].next = -1
    }

    private mutating func linkAtFront(_ index: Int) {
        self.nodes[index].previous = -1
        self.nodes[index].next = self.head
        if self.head >= 0 { self.nodes[self.head].previous = index }
        self.head = index
        if self.tail < 0 { self.tail = index }
    }

    /// Checks the links, the index map and the running cost; traps when they disagree.
    func _checkInvariants() {
        var seen = 0
        var cost = 0
        var previous = -1
        var index = self.head
        while index >= 0 {
            let node = self.nodes[index]
            precondition(node.previous == previous, "broken back link at \(index)")
            precondition(self.indices[node.key!] == index, "index map disagrees at \(index)")
            cost += node.element!.cost
            seen += 1
            previous = index
            index = node.next
        }
        precondition(previous == self.tail, "tail is not the last node")
        precondition(seen == self.indices.count, "list holds \(seen) nodes, map \(self.indices.count)")
        precondition(cost == self.totalCost, "running cost \(self.totalCost) differs from \(cost)")
        precondition(self.nodes.count - self.freeSlots.count == seen, "free list leaks slots")
    }
}

/// An element whose size counts against a byte bound.
protocol Costed {
    var cost: Int { get }
}

extension MemoryTier.Entry: Costed {}
