import Foundation

/// Encodes `Encodable` values into canonical bytes: equal values give equal bytes in every process,
/// on every machine and in every release of the same encoding version.
///
/// Version 1 of the encoding (documented in `docs/memoize-keys.md`), each value as a tag byte then
/// its content, lengths and counts as big-endian `UInt32`:
///
/// | tag | value | content |
/// |---|---|---|
/// | `n` | nil | — |
/// | `b` | Bool | 1 byte, 0 or 1 |
/// | `i` | any integer that fits `Int64` | 8 bytes, big-endian two's complement |
/// | `u` | `UInt64` above `Int64.max` | 8 bytes, big-endian |
/// | `f` | Float, Double | the `Double` bit pattern, big-endian; `-0.0` as `0.0`, every NaN as `0x7FF8000000000000` |
/// | `s` | String | length, UTF-8 bytes (not normalized) |
/// | `d` | Data | length, bytes |
/// | `a` | unkeyed container (arrays) | count, elements in order |
/// | `k` | keyed container (structs, classes) | count, then (key as `s`, value) sorted by key bytes |
/// | `m` | Dictionary | count, then (key, value) sorted by the key's canonical bytes |
/// | `S` | Set | count, elements sorted by their canonical bytes |
///
/// Dictionaries and sets are sorted because their own `encode(to:)` follows the per-process hash
/// seed; structs are sorted by field name so that reordering fields keeps keys.
@usableFromInline
struct CanonicalEncoder {
    @usableFromInline
    private(set) var bytes: [UInt8] = []

    @inlinable
    init() {
        self.bytes.reserveCapacity(96)
    }

    /// Appends the canonical bytes of `value`.
    @inlinable
    mutating func append<T: Encodable>(_ value: T) throws {
        try Self.append(value, to: &self.bytes)
    }

    /// Appends the canonical bytes of `value` to `sink`.
    ///
    /// Primitive values are written here, inlined into the caller, where the type checks below
    /// fold away; they produce the same bytes as the `Encoder` path.
    ///
    /// The type is told by comparing metatypes, not by casting: arguments of parameter packs reach
    /// here unspecialized, where a cast is a runtime call and a metatype comparison one instruction.
    @inlinable
    static func append<T: Encodable, Sink: CanonicalByteSink>(_ value: T, to sink: inout Sink) throws {
        if T.self == String.self {
            Self.writeString(unsafeBitCast(value, to: String.self), to: &sink)
        } else if T.self == Int.self {
            Self.writeInteger(Int64(unsafeBitCast(value, to: Int.self)), to: &sink)
        } else if T.self == Bool.self {
            Self.writeBool(unsafeBitCast(value, to: Bool.self), to: &sink)
        } else if T.self == Double.self {
            Self.writeDouble(unsafeBitCast(value, to: Double.self), to: &sink)
        } else {
            try Self.appendEncodable(value, to: &sink)
        }
    }

    /// Everything else goes through `Encodable`.
    @usableFromInline
    static func appendEncodable<T: Encodable, Sink: CanonicalByteSink>(_ value: T, to sink: inout Sink) throws {
        let node = CanonicalNode()
        try CanonicalNode.encode(value, into: node)
        node.write(to: &sink)
    }

    @inlinable
    mutating func appendRaw(_ raw: some Sequence<UInt8>) {
        self.bytes.append(contentsOf: raw)
    }

    @inlinable
    mutating func appendLength(_ count: Int) {
        Self.writeLength(count, to: &self.bytes)
    }

    // The writers of each tag, shared by the fast path and by `CanonicalNode`.

    @inlinable
    static func writeLength(_ count: Int, to bytes: inout some CanonicalByteSink) {
        withUnsafeBytes(of: UInt32(truncatingIfNeeded: count).bigEndian) { bytes.append(contentsOf: $0) }
    }

    @inlinable
    static func writeBool(_ value: Bool, to bytes: inout some CanonicalByteSink) {
        bytes.append(UInt8(ascii: "b"))
        bytes.append(value ? 1 : 0)
    }

    @inlinable
    static func writeString(_ string: String, to bytes: inout some CanonicalByteSink) {
        var string = string
        string.withUTF8 { utf8 in
            bytes.append(UInt8(ascii: "s"))
            writeLength(utf8.count, to: &bytes)
            bytes.append(contentsOf: UnsafeRawBufferPointer(utf8))
        }
    }

    @inlinable
    static func writeInteger(_ value: Int64, to bytes: inout some CanonicalByteSink) {
        bytes.append(UInt8(ascii: "i"))
        writeBigEndian(UInt64(bitPattern: value), to: &bytes)
    }

    @inlinable
    static func writeUnsigned(_ value: UInt64, to bytes: inout some CanonicalByteSink) {
        if value <= UInt64(Int64.max) {
            writeInteger(Int64(value), to: &bytes)
        } else {
            bytes.append(UInt8(ascii: "u"))
            writeBigEndian(value, to: &bytes)
        }
    }

    @inlinable
    static func writeDouble(_ value: Double, to bytes: inout some CanonicalByteSink) {
        let pattern: UInt64 = value.isNaN ? 0x7FF8_0000_0000_0000 : (value == 0 ? 0 : value.bitPattern)
        bytes.append(UInt8(ascii: "f"))
        writeBigEndian(pattern, to: &bytes)
    }

    @inlinable
    static func writeBigEndian(_ value: UInt64, to bytes: inout some CanonicalByteSink) {
        withUnsafeBytes(of: value.bigEndian) { bytes.append(contentsOf: $0) }
    }
}

/// Where canonical bytes are written: an array, or the inline storage of a `MemoryFastKey`.
@usableFromInline
protocol CanonicalByteSink {
    mutating func append(_ byte: UInt8)
    mutating func append(contentsOf bytes: UnsafeRawBufferPointer)
}

extension Array: CanonicalByteSink where Element == UInt8 {}

/// A Set, seen through its elements.
protocol CanonicalSet {
    func canonicalElements() throws -> [[UInt8]]
}

/// A Dictionary, seen through its pairs.
protocol CanonicalDictionary {
    func canonicalPairs() throws -> [(key: [UInt8], value: [UInt8])]
}

extension Set: CanonicalSet where Element: Encodable {
    func canonicalElements() throws -> [[UInt8]] {
        try self.map { element in
            var encoder = CanonicalEncoder()
            try encoder.append(element)
            return encoder.bytes
        }
    }
}

extension Dictionary: CanonicalDictionary where Key: Encodable, Value: Encodable {
    func canonicalPairs() throws -> [(key: [UInt8], value: [UInt8])] {
        try self.map { key, value in
            var keyEncoder = CanonicalEncoder()
            try keyEncoder.append(key)
            var valueEncoder = CanonicalEncoder()
            try valueEncoder.append(value)
            return (keyEncoder.bytes, valueEncoder.bytes)
        }
    }
}

/// One value being encoded: a scalar's bytes, or a container's children.
final class CanonicalNode {
    enum Content {
        case empty
        case scalar([UInt8])
        case unkeyed([CanonicalNode])
        case keyed([String: CanonicalNode])
    }

    var content: Content = .empty

    static func encode<T: Encodable>(_ value: T, into node: CanonicalNode) throws {
        if let data = value as? Data {
            var bytes: [UInt8] = [UInt8(ascii: "d")]
            writeLength(data.count, to: &bytes)
            bytes.append(contentsOf: data)
            node.content = .scalar(bytes)
        } else if let set = value as? any CanonicalSet {
            let elements = try set.canonicalElements().sorted { $0.lexicographicallyPrecedes($1) }
            var bytes: [UInt8] = [UInt8(ascii: "S")]
            writeLength(elements.count, to: &bytes)
            for element in elements { bytes.append(contentsOf: element) }
            node.content = .scalar(bytes)
        } else if let dictionary = value as? any CanonicalDictionary {
            let pairs = try dictionary.canonicalPairs().sorted { $0.key.lexicographicallyPrecedes($1.key) }
            var bytes: [UInt8] = [UInt8(ascii: "m")]
            writeLength(pairs.count, to: &bytes)
            for pair in pairs {
                bytes.append(contentsOf: pair.key)
                bytes.append(contentsOf: pair.value)
            }
            node.content = .scalar(bytes)
        } else {
            try value.encode(to: NodeEncoder(node: node, codingPath: []))
        }
    }

    func write(to bytes: inout some CanonicalByteSink) {
        switch self.content {
        case .empty:
            // A value that encoded nothing at all (an empty `encode(to:)`): an empty keyed container.
            bytes.append(UInt8(ascii: "k"))
            Self.writeLength(0, to: &bytes)
        case .scalar(let scalar):
            scalar.withUnsafeBytes { bytes.append(contentsOf: $0) }
        case .unkeyed(let children):
            bytes.append(UInt8(ascii: "a"))
            Self.writeLength(children.count, to: &bytes)
            for child in children { child.write(to: &bytes) }
        case .keyed(let children):
            bytes.append(UInt8(ascii: "k"))
            Self.writeLength(children.count, to: &bytes)
            for (key, child) in children.sorted(by: { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }) {
                Self.writeString(key, to: &bytes)
                child.write(to: &bytes)
            }
        }
    }

    static func writeLength(_ count: Int, to bytes: inout some CanonicalByteSink) {
        CanonicalEncoder.writeLength(count, to: &bytes)
    }
    static func writeString(_ string: String, to bytes: inout some CanonicalByteSink) {
        CanonicalEncoder.writeString(string, to: &bytes)
    }
    static func writeInteger(_ value: Int64, to bytes: inout [UInt8]) {
        CanonicalEncoder.writeInteger(value, to: &bytes)
    }
    static func writeUnsigned(_ value: UInt64, to bytes: inout [UInt8]) {
        CanonicalEncoder.writeUnsigned(value, to: &bytes)
    }
    static func writeDouble(_ value: Double, to bytes: inout [UInt8]) {
        CanonicalEncoder.writeDouble(value, to: &bytes)
    }

    static func scalar(_ write: (inout [UInt8]) -> Void) -> CanonicalNode {
        let node = CanonicalNode()
        var bytes: [UInt8] = []
        write(&bytes)
        node.content = .scalar(bytes)
        return node
    }
}

// MARK: - The Encoder

private struct NodeEncoder: Encoder {
    let node: CanonicalNode
    let codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        if case .keyed = self.node.content {} else { self.node.content = .keyed([:]) }
        return KeyedEncodingContainer(KeyedContainer<Key>(node: self.node, codingPath: self.codingPath))
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        if case .unkeyed = self.node.content {} else { self.node.content = .unkeyed([]) }
        return UnkeyedContainer(node: self.node, codingPath: self.codingPath)
    }

    func singleValueContainer() -> any SingleValueEncodingContainer {
        SingleValueContainer(node: self.node, codingPath: self.codingPath)
    }
}

private struct SingleValueContainer: SingleValueEncodingContainer {
    let node: CanonicalNode
    let codingPath: [any CodingKey]

    private func set(_ write: (inout [UInt8]) -> Void) {
        var bytes: [UInt8] = []
        write(&bytes)
        self.node.content = .scalar(bytes)
    }

    mutating func encodeNil() throws { self.set { $0.append(UInt8(ascii: "n")) } }
    mutating func encode(_ value: Bool) throws {
        self.set {
            $0.append(UInt8(ascii: "b"))
            $0.append(value ? 1 : 0)
        }
    }
    mutating func encode(_ value: String) throws { self.set { CanonicalNode.writeString(value, to: &$0) } }
    mutating func encode(_ value: Double) throws { self.set { CanonicalNode.writeDouble(value, to: &$0) } }
    mutating func encode(_ value: Float) throws { self.set { CanonicalNode.writeDouble(Double(value), to: &$0) } }
    mutating func encode(_ value: Int) throws { self.set { CanonicalNode.writeInteger(Int64(value), to: &$0) } }
    mutating func encode(_ value: Int8) throws { self.set { CanonicalNode.writeInteger(Int64(value), to: &$0) } }
    mutating func encode(_ value: Int16) throws { self.set { CanonicalNode.writeInteger(Int64(value), to: &$0) } }
    mutating func encode(_ value: Int32) throws { self.set { CanonicalNode.writeInteger(Int64(value), to: &$0) } }
    mutating func encode(_ value: Int64) throws { self.set { CanonicalNode.writeInteger(value, to: &$0) } }
    mutating func encode(_ value: UInt) throws { self.set { CanonicalNode.writeUnsigned(UInt64(value), to: &$0) } }
    mutating func encode(_ value: UInt8) throws { self.set { CanonicalNode.writeUnsigned(UInt64(value), to: &$0) } }
    mutating func encode(_ value: UInt16) throws { self.set { CanonicalNode.writeUnsigned(UInt64(value), to: &$0) } }
    mutating func encode(_ value: UInt32) throws { self.set { CanonicalNode.writeUnsigned(UInt64(value), to: &$0) } }
    mutating func encode(_ value: UInt64) throws { self.set { CanonicalNode.writeUnsigned(value, to: &$0) } }
    mutating func encode<T: Encodable>(_ value: T) throws { try CanonicalNode.encode(value, into: self.node) }
}

private struct UnkeyedContainer: UnkeyedEncodingContainer {
    let node: CanonicalNode
    let codingPath: [any CodingKey]

    var count: Int {
        if case .unkeyed(let children) = self.node.content { return children.count }
        return 0
    }

    private func append(_ child: CanonicalNode) {
        guard case .unkeyed(var children) = self.node.content else { return }
        self.node.content = .empty  // keeps `children` uniquely referenced while appending
        children.append(child)
        self.node.content = .unkeyed(children)
    }

    private func appendScalar(_ write: (inout [UInt8]) -> Void) { self.append(CanonicalNode.scalar(write)) }

    mutating func encodeNil() throws { self.appendScalar { $0.append(UInt8(ascii: "n")) } }
    mutating func encode(_ value: Bool) throws {
        self.appendScalar {
            $0.append(UInt8(ascii: "b"))
            $0.append(value ? 1 : 0)
        }
    }
    mutating func encode(_ value: String) throws { self.appendScalar { CanonicalNode.writeString(value, to: &$0) } }
    mutating func encode(_ value: Double) throws { self.appendScalar { CanonicalNode.writeDouble(value, to: &$0) } }
    mutating func encode(_ value: Float) throws {
        self.appendScalar { CanonicalNode.writeDouble(Double(value), to: &$0) }
    }
    mutating func encode(_ value: Int) throws {
        self.appendScalar { CanonicalNode.writeInteger(Int64(value), to: &$0) }
    }
    mutating func encode(_ value: Int8) throws {
        self.appendScalar { CanonicalNode.writeInteger(Int64(value), to: &$0) }
    }
    mutating func encode(_ value: Int16) throws {
        self.appendScalar { CanonicalNode.writeInteger(Int64(value), to: &$0) }
    }
    mutating func encode(_ value: Int32) throws {
        self.appendScalar { CanonicalNode.writeInteger(Int64(value), to: &$0) }
    }
    mutating func encode(_ value: Int64) throws { self.appendScalar { CanonicalNode.writeInteger(value, to: &$0) } }
    mutating func encode(_ value: UInt) throws {
        self.appendScalar { CanonicalNode.writeUnsigned(UInt64(value), to: &$0) }
    }
    mutating func encode(_ value: UInt8) throws {
        self.appendScalar { CanonicalNode.writeUnsigned(UInt64(value), to: &$0) }
    }
    mutating func encode(_ value: UInt16) throws {
        self.appendScalar { CanonicalNode.writeUnsigned(UInt64(value), to: &$0) }
    }
    mutating func encode(_ value: UInt32) throws {
        self.appendScalar { CanonicalNode.writeUnsigned(UInt64(value), to: &$0) }
    }
    mutating func encode(_ value: UInt64) throws { self.appendScalar { CanonicalNode.writeUnsigned(value, to: &$0) } }

    mutating func encode<T: Encodable>(_ value: T) throws {
        let child = CanonicalNode()
        try CanonicalNode.encode(value, into: child)
        self.append(child)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<
        NestedKey
    > {
        let child = CanonicalNode()
        self.append(child)
        return NodeEncoder(node: child, codingPath: self.codingPath).container(keyedBy: keyType)
    }

    mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
        let child = CanonicalNode()
        self.append(child)
        return NodeEncoder(node: child, codingPath: self.codingPath).unkeyedContainer()
    }

    mutating func superEncoder() -> any Encoder {
        let child = CanonicalNode()
        self.append(child)
        return NodeEncoder(node: child, codingPath: self.codingPath)
    }
}

private struct KeyedContainer<Key: CodingKey>: KeyedEncodingContainerProtocol {
    let node: CanonicalNode
    let codingPath: [any CodingKey]

    private func set(_ child: CanonicalNode, for key: String) {
        guard case .keyed(var children) = self.node.content else { return }
        self.node.content = .empty
        children[key] = child
        self.node.content = .keyed(children)
    }

    private func setScalar(_ key: Key, _ write: (inout [UInt8]) -> Void) {
        self.set(CanonicalNode.scalar(write), for: key.stringValue)
    }

    mutating func encodeNil(forKey key: Key) throws { self.setScalar(key) { $0.append(UInt8(ascii: "n")) } }
    mutating func encode(_ value: Bool, forKey key: Key) throws {
        self.setScalar(key) {
            $0.append(UInt8(ascii: "b"))
            $0.append(value ? 1 : 0)
        }
    }
    mutating func encode(_ value: String, forKey key: Key) throws {
        self.setScalar(key) { CanonicalNode.writeString(value, to: &$0) }
    }
    mutating func encode(_ value: Double, forKey key: Key) throws {
        self.setScalar(key) { CanonicalNode.writeDouble(value, to: &$0) }
    }
    mutating func encode(_ value: Float, forKey key: Key) throws {
        self.setScalar(key) { CanonicalNode.writeDouble(Double(value), to: &$0) }
    }
    mutating func encode(_ value: Int, forKey key: Key) throws {
        self.setScalar(key) { CanonicalNode.writeInteger(Int64(value), to: &$0) }
    }
    mutating func encode(_ value: Int8, forKey key: Key) throws {
        self.setScalar(key) { CanonicalNode.writeInteger(Int64(value), to: &$0) }
    }
    mutating func encode(_ value: Int16, forKey key: Key) throws {
        self.setScalar(key) { CanonicalNode.writeInteger(Int64(value), to: &$0) }
    }
    mutating func encode(_ value: Int32, forKey key: Key) throws {
        self.setScalar(key) { CanonicalNode.writeInteger(Int64(value), to: &$0) }
    }
    mutating func encode(_ value: Int64, forKey key: Key) throws {
        self.setScalar(key) { CanonicalNode.writeInteger(value, to: &$0) }
    }
    mutating func encode(_ value: UInt, forKey key: Key) throws {
        self.setScalar(key) { CanonicalNode.writeUnsigned(UInt64(value), to: &$0) }
    }
    mutating func encode(_ value: UInt8, forKey key: Key) throws {
        self.setScalar(key) { CanonicalNode.writeUnsigned(UInt64(value), to: &$0) }
    }
    mutating func encode(_ value: UInt16, forKey key: Key) throws {
        self.setScalar(key) { CanonicalNode.writeUnsigned(UInt64(value), to: &$0) }
    }
    mutating func encode(_ value: UInt32, forKey key: Key) throws {
        self.setScalar(key) { CanonicalNode.writeUnsigned(UInt64(value), to: &$0) }
    }
    mutating func encode(_ value: UInt64, forKey key: Key) throws {
        self.setScalar(key) { CanonicalNode.writeUnsigned(value, to: &$0) }
    }

    mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
        let child = CanonicalNode()
        try CanonicalNode.encode(value, into: child)
        self.set(child, for: key.stringValue)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key)
        -> KeyedEncodingContainer<NestedKey>
    {
        let child = CanonicalNode()
        self.set(child, for: key.stringValue)
        return NodeEncoder(node: child, codingPath: self.codingPath + [key]).container(keyedBy: keyType)
    }

    mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
        let child = CanonicalNode()
        self.set(child, for: key.stringValue)
        return NodeEncoder(node: child, codingPath: self.codingPath + [key]).unkeyedContainer()
    }

    mutating func superEncoder() -> any Encoder {
        let child = CanonicalNode()
        self.set(child, for: "super")
        return NodeEncoder(node: child, codingPath: self.codingPath)
    }

    mutating func superEncoder(forKey key: Key) -> any Encoder {
        let child = CanonicalNode()
        self.set(child, for: key.stringValue)
        return NodeEncoder(node: child, codingPath: self.codingPath + [key])
    }
}
