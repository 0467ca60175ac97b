import Foundation

/// The modes of Python panza, read from the environment or set in code.
///
/// | variable | effect |
/// |---|---|
/// | `BUST_CACHE` | `all`, or comma-separated memoize ids: those calls skip the cache, run, and overwrite what was stored |
/// | `CACHE_ONLY` | `1`/`true`/`yes`: a miss throws ``PanzaError/Code/cacheOnlyMiss`` instead of calling the loader |
/// | `PRINT_CACHE_MISSES` | `1`/`true`/`yes`: each miss that calls a loader is printed to standard error |
public struct CacheModes: Hashable, Sendable {
    /// Which calls skip the cache.
    public enum Bust: Hashable, Sendable {
        /// None: the cache is used.
        case none
        /// Every memoized id and every read-through key.
        case all
        /// These memoize ids.
        case ids(Set<String>)
    }

    /// See ``Bust``.
    public var bust: Bust
    /// When `true`, a miss throws ``PanzaError/Code/cacheOnlyMiss`` and no loader is called.
    public var cacheOnly: Bool
    /// When `true`, misses that call a loader are printed to standard error (and logged at `info`).
    public var printMisses: Bool

    public init(bust: Bust = .none, cacheOnly: Bool = false, printMisses: Bool = false) {
        self.bust = bust
        self.cacheOnly = cacheOnly
        self.printMisses = printMisses
    }

    /// The modes named by `BUST_CACHE`, `CACHE_ONLY` and `PRINT_CACHE_MISSES` in `environment`
    /// (the process environment when `nil`).
    public static func fromEnvironment(_ environment: [String: String]? = nil) -> CacheModes {
        let environment = environment ?? ProcessInfo.processInfo.environment
        var modes = CacheModes()
        if let value = environment["BUST_CACHE"]?.trimmingCharacters(in: .whitespaces), !value.isEmpty {
            let ids = Set(
                value.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            )
            modes.bust = ids.contains("all") ? .all : .ids(ids)
        }
        modes.cacheOnly = isTrue(environment["CACHE_ONLY"])
        modes.printMisses = isTrue(environment["PRINT_CACHE_MISSES"])
        return modes
    }

    /// Whether calls of memoize id `id` (`""` for read-through keys) skip the cache.
    public func busts(id: String) -> Bool {
        switch self.bust {
        case .none: false
        case .all: true
        case .ids(let ids): ids.contains(id)
        }
    }

    private static func isTrue(_ value: String?) -> Bool {
        guard let value = value?.trimmingCharacters(in: .whitespaces).lowercased() else { return false }
        return ["1", "true", "yes", "on"].contains(value)
    }
}
