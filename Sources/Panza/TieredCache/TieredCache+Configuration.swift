public import Logging

extension TieredCache {
    /// Settings of a ``TieredCache``. Every tier is optional.
    public struct Configuration: Sendable {
        /// When `set` returns.
        public enum WriteMode: Hashable, Sendable {
            /// `set` returns once the value is in memory and queued for the tiers below: the
            /// default. See ``WriteBehind`` for the loss window.
            case writeBehind
            /// `set` returns once every tier holds the value.
            case writeThrough
        }

        /// Bounds of the write-behind queues.
        ///
        /// Loss window: if the process dies (SIGKILL, power loss excepted with the default
        /// `synchronous=NORMAL`), what is lost is what was still queued: at most
        /// ``maxPendingWrites`` operations per tier, and in practice what arrived during the last
        /// transaction (milliseconds). After ``TieredCache/flush()`` returns, nothing written
        /// before it can be lost.
        public struct WriteBehind: Hashable, Sendable {
            /// Operations a tier's queue holds before writers wait for room.
            public var maxPendingWrites: Int
            /// Operations applied in one batch (one SQLite transaction).
            public var maxBatchSize: Int

            public init(maxPendingWrites: Int = 10_000, maxBatchSize: Int = 512) {
                self.maxPendingWrites = maxPendingWrites
                self.maxBatchSize = maxBatchSize
            }
        }

        /// The memory tier; `nil` for none.
        public var memory: MemoryTier.Configuration? = .init()
        /// The SQLite tier; `nil` for none.
        public var sqlite: SQLiteTier.Configuration? = nil
        /// A tier below SQLite, such as `PanzaS3`'s `S3Tier`; `nil` for none.
        public var remote: (any CacheTier)? = nil
        /// See ``WriteMode``.
        public var writeMode: WriteMode = .writeBehind
        /// See ``WriteBehind``.
        public var writeBehind = WriteBehind()
        /// How long entries live when a call gives no time to live; `nil` for forever.
        public var defaultTimeToLive: Duration? = nil
        /// How long ``TieredCache/close()`` waits for pending uploads to the remote tier; what is
        /// not sent by then stays in the SQLite outbox and is sent by the next cache that opens the file.
        public var remoteCloseTimeout: Duration = .seconds(10)
        /// The largest encoded value (before compression) accepted; larger ones throw
        /// ``PanzaError/Code/valueTooLarge``. 16 MiB by default, at most 1 GiB.
        public var maxValueBytes: Int = 16 << 20
        /// Whether envelopes are LZ4-compressed (when that makes them smaller).
        public var compression = true
        /// Limits on every loader call of this cache (read-through and memoized), on top of the
        /// limits of each memoized id; `nil` for none.
        public var loadLimits: LoadLimits? = nil
        /// Bust, cache-only and print-misses modes; read from the environment by default.
        public var modes: CacheModes = .fromEnvironment()
        /// Records every access to a trace file, for `panza bench --trace`; `nil` for none.
        public var trace: AccessTrace? = nil
        /// Where Panza logs; by default nowhere.
        public var logger: Logger? = nil

        public init() {}
    }
}
