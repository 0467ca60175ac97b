/// The identity of a stored entry.
///
/// Plain keys (`cache.set(value, forKey: "k")`) live in the empty namespace with the key as
/// their raw value. Memoized calls live in the namespace of their id, under the raw value
/// `"{id}/{sha256-hex}"`, the layout Python panza uses for `{fn_id}/{arg_hash}`.
public struct CacheKey: Hashable, Sendable, CustomStringConvertible {
    /// The memoize id the entry belongs to, or `""` for plain keys.
    public let namespace: String
    /// The full key under which every tier stores the entry.
    public let rawValue: String

    /// Creates a key; prefer ``TieredCache`` APIs, which validate keys for you.
    public init(namespace: String = "", rawValue: String) {
        self.namespace = namespace
        self.rawValue = rawValue
    }

    /// The raw key.
    public var description: String { self.rawValue }
}
