/// An error thrown by Panza.
///
/// `PanzaError` is a struct wrapping a code, so new codes can be added without breaking
/// callers. Switch on ``code`` to react to a particular failure:
///
/// ```swift
/// do {
///     _ = try await forecast.peek("Oslo", 3)
/// } catch let error as PanzaError where error.code == .cacheOnlyMiss {
///     // CACHE_ONLY is on and the entry is not stored
/// }
/// ```
///
/// A cache miss is never an error: lookups return `nil`.
public struct PanzaError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What went wrong, in a form fit for `switch` and `==`.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Value: Hashable, Sendable {
            case invalidKey
            case valueTooLarge
            case encodingFailed
            case decodingFailed
            case typeMismatch
            case corruptBlob
            case unsupportedFormat
            case notAPanzaDatabase
            case corruptDatabase
            case databaseBusy
            case databaseFailure
            case unsupportedSchemaVersion
            case cacheOnlyMiss
            case closed
            case invalidConfiguration
            case writeDropped
            case closeTimedOut
            case timedOut
            case untrustedBlob
            case leaseLost
        }

        private let value: Value
        private init(_ value: Value) { self.value = value }

        /// A key is empty or longer than ``TieredCache/maximumKeyLength`` bytes.
        public static let invalidKey = Code(.invalidKey)
        /// A value's encoded size exceeds the configured maximum.
        public static let valueTooLarge = Code(.valueTooLarge)
        /// A value could not be encoded.
        public static let encodingFailed = Code(.encodingFailed)
        /// A stored value could not be decoded as the requested type.
        public static let decodingFailed = Code(.decodingFailed)
        /// A value held in memory has another type than the one requested.
        public static let typeMismatch = Code(.typeMismatch)
        /// A blob failed its checksum or its structure is damaged.
        public static let corruptBlob = Code(.corruptBlob)
        /// A blob was written by a newer format version or with an unknown codec.
        public static let unsupportedFormat = Code(.unsupportedFormat)
        /// The SQLite file is a database, but not one of Panza's.
        public static let notAPanzaDatabase = Code(.notAPanzaDatabase)
        /// The SQLite file is not a database or is damaged.
        public static let corruptDatabase = Code(.corruptDatabase)
        /// The SQLite database stayed locked by another connection for longer than the busy timeout.
        public static let databaseBusy = Code(.databaseBusy)
        /// SQLite reported another failure (disk full, I/O error, read-only file, ...).
        public static let databaseFailure = Code(.databaseFailure)
        /// The SQLite file was written by a newer Panza with a schema this version does not know.
        public static let unsupportedSchemaVersion = Code(.unsupportedSchemaVersion)
        /// Cache-only mode is on and the entry is not in any tier.
        public static let cacheOnlyMiss = Code(.cacheOnlyMiss)
        /// The cache was closed.
        public static let closed = Code(.closed)
        /// A configuration value is out of range.
        public static let invalidConfiguration = Code(.invalidConfiguration)
        /// Writes failed for good (the tier rejected them, or they failed
        /// ``TieredCache/Configuration/WriteBehind/maxAttempts`` times) and were moved to the dead
        /// letters; the writes behind them went on.
        public static let writeDropped = Code(.writeDropped)
        /// ``TieredCache/close()`` reached ``TieredCache/Configuration/closeTimeout`` with operations
        /// not applied; the message says how many, for which tiers.
        public static let closeTimedOut = Code(.closeTimedOut)
        /// An operation did not finish within its time limit.
        public static let timedOut = Code(.timedOut)
        /// An object of a shared tier failed signature verification: unsigned where signatures are
        /// required, signed with an unknown key, or for another object key or bucket. Lookups
        /// treat it as a miss and count it in ``CacheStatistics/untrustedBlobs``.
        public static let untrustedBlob = Code(.untrustedBlob)
        /// An upload batch's outbox lease is no longer this process's: it stalled past the lease
        /// (paused, suspended) and another process took the records over. The batch is neither
        /// uploaded further nor deleted by this process; the other process uploads it.
        public static let leaseLost = Code(.leaseLost)

        /// `PanzaError.code: message`, with the key or path.
        public var description: String { "\(self.value)" }
    }

    /// What went wrong.
    public let code: Code
    /// A one-line explanation, without secrets or values.
    public let message: String
    /// The key concerned, if any.
    public let key: String?
    /// The file concerned, if any.
    public let path: String?
    /// The error that caused this one, if any.
    public let underlying: (any Error & Sendable)?

    /// An error with `code`, a one-line `message`, the `key` or `path` concerned, and what caused it.
    public init(
        code: Code,
        message: String,
        key: String? = nil,
        path: String? = nil,
        underlying: (any Error & Sendable)? = nil
    ) {
        self.code = code
        self.message = message
        self.key = key
        self.path = path
        self.underlying = underlying
    }

    /// `PanzaError.code: message`, with the key or path.
    public var description: String {
        var text = "PanzaError.\(self.code): \(self.message)"
        if let path { text += " (path: \(path))" }
        if let key { text += " (key: \(key))" }
        if let underlying { text += " (underlying: \(underlying))" }
        return text
    }

    /// Errors are equal when their code, message, key and path are (the underlying error is not compared).
    public static func == (lhs: PanzaError, rhs: PanzaError) -> Bool {
        lhs.code == rhs.code && lhs.message == rhs.message && lhs.key == rhs.key && lhs.path == rhs.path
    }

    /// Hashes what `==` compares.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(self.code)
        hasher.combine(self.message)
        hasher.combine(self.key)
        hasher.combine(self.path)
    }
}
