import Foundation

/// The modes of Python panza, read from the environment or set in code.
///
/// | variable | effect |
/// |---|---|
/// | `BUST_CACHE` | on (see below) or `all`: every call; else comma-separated memoize ids: those calls skip the cache, run, and overwrite what was stored |
/// | `CACHE_ONLY` | on: a miss throws ``PanzaError/Code/cacheOnlyMiss`` instead of calling the loader |
/// | `PRINT_CACHE_MISSES` | on: each miss that calls a loader is printed to standard error |
///
/// As in Python panza, anything but an explicit "false" turns a flag on: a variable is **off** when
/// it is unset, empty, or (trimmed, in any case) `0`, `false`, `no` or `off`, and **on** otherwise.
/// For `BUST_CACHE`, `1`, `true`, `yes`, `on` and `all` mean every call; any other value is a list
/// of ids.
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

    /// Modes set in code; all off by default.
    public init(bust: Bust = .none, cacheOnly: Bool = false, printMisses: Bool = false) {
        self.bust = bust
        self.cacheOnly = cacheOnly
        self.printMisses = printMisses
    }

    /// The modes named by `BUST_CACHE`, `CACHE_ONLY` and `PRINT_CACHE_MISSES` in `environment`
    /// (the process environment when `nil`).
    @available(*, deprecated, renamed: "init(environment:)")
    public static func fromEnvironment(_ environment: [String: String]? = nil) -> CacheModes {
        CacheModes(environment: environment)
    }

    /// The modes named by `BUST_CACHE`, `CACHE_ONLY` and `PRINT_CACHE_MISSES` in `environment`
    /// (the process environment when `nil`).
    public init(environment: [String: String]?) {
        let environment = environment ?? ProcessInfo.processInfo.environment
        var modes = CacheModes()
        if let value = environment["BUST_CACHE"], CacheModes.isOn(value) {
            let ids = Set(
                value.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            )
            let everything: Set<String> = ["1", "true", "yes", "on", "all"]
            modes.bust = ids.contains { everything.contains($0.lowercased()) } ? .all : .ids(ids)
        }
        modes.cacheOnly = environment["CACHE_ONLY"].map(CacheModes.isOn) ?? false
        modes.printMisses = environment["PRINT_CACHE_MISSES"].map(CacheModes.isOn) ?? false
        self = modes
    }

    /// Whether calls of memoize id `id` (`""` for read-through keys) skip the cache.
    public func busts(id: String) -> Bool {
        switch self.bust {
        case .none: false
        case .all: true
        case .ids(let ids): ids.contains(id)
        }
    }

    /// Anything but an explicit false: off for empty, `0`, `false`, `no` and `off`.
    static func isOn(_ value: String) -> Bool {
        let value = value.trimmingCharacters(in: .whitespacesAndNewlines).lowercased()
        return !["", "0", "false", "no", "off"].contains(value)
    }
}
