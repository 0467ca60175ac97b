public import CoreMetrics
import Logging
public import Logging
import Synchronization

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

        /// Bounds and retries of the write-behind queues.
        ///
        /// Loss window: if the process dies (SIGKILL, power loss excepted with the default
        /// `synchronous=NORMAL`), what is lost is what was still queued in memory: at most
        /// ``maxPendingWrites`` operations (and about ``maxPendingBytes``) per tier, and in practice
        /// what arrived during the last transaction (milliseconds). Uploads to a remote tier below
        /// SQLite are in the SQLite outbox once the local transaction committed, and survive.
        /// After ``TieredCache/flush()`` returns, nothing written before it can be lost.
        ///
        /// A failed batch is retried with its first operation alone, after a pause that doubles
        /// from ``retryBackoff`` to ``maxRetryBackoff`` (30 s for the outbox). An operation that
        /// its tier rejects for good, or that fails ``maxAttempts`` times, goes to the dead
        /// letters (see ``DeadLetter``) and the queue goes on.
        public struct WriteBehind: Hashable, Sendable {
            /// Operations a tier's queue holds before writers wait for room.
            public var maxPendingWrites: Int
            /// Envelope bytes a tier's queue holds before writers wait for room; 64 MiB by default.
            public var maxPendingBytes: Int
            /// Operations applied in one batch (one SQLite transaction).
            public var maxBatchSize: Int
            /// Failed attempts after which an operation goes to the dead letters; 8 by default.
            public var maxAttempts: Int
            /// The pause after the first failure; 50 ms by default.
            public var retryBackoff: Duration
            /// The longest pause between retries of an in-memory queue; 5 s by default.
            public var maxRetryBackoff: Duration
            /// How long an uploader holds the outbox records it claimed. A batch that takes longer
            /// (less a margin) is abandoned and retried, and a process that died leaves its claim
            /// to others after this long. 60 s by default.
            public var outboxLease: Duration
            /// How often an idle uploader looks for outbox records written by other processes;
            /// 2 s by default.
            public var outboxPollInterval: Duration

            /// Settings with defaults; see each property.
            public init(
                maxPendingWrites: Int = 10_000,
                maxBatchSize: Int = 512,
                maxPendingBytes: Int = 64 << 20,
                maxAttempts: Int = 8,
                retryBackoff: Duration = .milliseconds(50),
                maxRetryBackoff: Duration = .seconds(5),
                outboxLease: Duration = .seconds(60),
                outboxPollInterval: Duration = .seconds(2)
            ) {
                self.maxPendingWrites = maxPendingWrites
                self.maxBatchSize = maxBatchSize
                self.maxPendingBytes = maxPendingBytes
                self.maxAttempts = maxAttempts
                self.retryBackoff = retryBackoff
                self.maxRetryBackoff = maxRetryBackoff
                self.outboxLease = outboxLease
                self.outboxPollInterval = outboxPollInterval
            }

            func drainConfiguration(maxBackoff: Duration, pollInterval: Duration?) -> DrainStateMachine.Configuration {
                DrainStateMachine.Configuration(
                    maxBatch: self.maxBatchSize,
                    maxAttempts: self.maxAttempts,
                    initialBackoff: self.retryBackoff,
                    maxBackoff: max(self.retryBackoff, maxBackoff),
                    pollInterval: pollInterval
                )
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
        /// How long entries live when a call gives no time to live; `nil` for forever. Zero or
        /// less means "do not reuse" (see ``TieredCache/set(_:forKey:timeToLive:)``).
        public var defaultTimeToLive: Duration? = nil
        /// The ``Freshness`` of calls that give none (stale-while-revalidate, fail-safe, loader
        /// timeouts, refresh-ahead); `nil` (the default) for none of it.
        public var defaultFreshness: Freshness? = nil
        /// The clock behind creation and expiry times (in every tier: the SQLite tier expires
        /// entries and dates accesses by it too), stale periods, loader timeouts and the remote
        /// circuit breaker's open periods; the system's by default. Tests give a
        /// ``ManualCacheClock``. Outbox leases, which other processes judge, use the wall clock.
        public var clock: any CacheClock = SystemCacheClock()
        /// How long a lookup waits for the remote tier before it counts as a miss and the caller
        /// goes on to its loader (the read goes on in the background); 1 s by default, `nil` for
        /// no limit. SQLite is never timed out.
        public var remoteReadTimeout: Duration? = .seconds(1)
        /// The circuit breaker of the remote tier: after consecutive failures or timeouts, lookups
        /// skip it (misses go straight to the loader; uploads stay queued) until a probe succeeds.
        public var remoteBreaker = CircuitBreaker.Configuration()
        /// How long ``TieredCache/close()`` may take in all, whatever the tiers do; 10 s by default.
        public var closeTimeout: Duration = .seconds(10)
        /// How long ``TieredCache/close()`` waits for pending uploads to the remote tier (within
        /// ``closeTimeout``); what is not sent by then stays in the SQLite outbox and is sent by the
        /// next cache that opens the file.
        public var remoteCloseTimeout: Duration = .seconds(10)
        /// The largest encoded value (before compression) stored, a safety limit: 1 GiB by default,
        /// at most 64 GiB.
        ///
        /// Values are stored in pieces (1 MiB rows in SQLite, multipart objects in S3), so the limit
        /// is about memory, not about the tiers: a value is held whole while it is encoded and
        /// decoded. A loader's larger result is returned to its caller and not stored (counted in
        /// ``CacheStatistics/unstorableResults``); ``TieredCache/set(_:forKey:timeToLive:)`` of a larger value throws
        /// ``PanzaError/Code/valueTooLarge``. A stored envelope that announces more is refused before
        /// anything is allocated.
        public var maxValueBytes: Int = 1 << 30
        /// Whether envelopes are LZ4-compressed (when that makes them smaller).
        public var compression = true
        /// Limits on every loader call of this cache (read-through and memoized), on top of the
        /// limits of each memoized id; `nil` for none.
        public var loadLimits: LoadLimits? = nil
        /// Bust, cache-only and print-misses modes; read from the environment by default.
        public var modes: CacheModes = CacheModes(environment: nil)
        /// How the cache reports through swift-metrics (see `docs/metrics.md`); `nil` for not at all.
        /// By default every 10 s to `MetricsSystem.factory` (which drops everything until the
        /// program bootstraps a backend such as swift-prometheus).
        public var metrics: MetricsReporting? = MetricsReporting()
        /// Records every access to a trace file, for `panza bench --trace`; `nil` for none.
        public var trace: AccessTrace? = nil
        /// Where Panza logs; by default nowhere.
        @available(*, deprecated, message: "pass the logger to TieredCache(configuration:logger:)")
        public var logger: Logger? {
            get { self.deprecatedLogger }
            set { self.deprecatedLogger = newValue }
        }
        var deprecatedLogger: Logger? = nil

        /// The clock of the write-behind drainers (tests drive backoff with a manual clock).
        var drainTiming: QueueDrainer.Timing? = nil

        /// Settings with defaults; see each property.
        public init() {}

        func validate() throws {
            guard self.maxValueBytes > 0, self.maxValueBytes <= 64 << 30 else {
                throw PanzaError(
                    code: .invalidConfiguration,
                    message: "maxValueBytes must be between 1 and 64 GiB, not \(self.maxValueBytes)"
                )
            }
            let writeBehind = self.writeBehind
            guard writeBehind.maxPendingWrites > 0, writeBehind.maxBatchSize > 0, writeBehind.maxPendingBytes > 0,
                writeBehind.maxAttempts > 0, writeBehind.retryBackoff > .zero, writeBehind.outboxLease >= .seconds(1),
                writeBehind.outboxPollInterval > .zero
            else {
                throw PanzaError(
                    code: .invalidConfiguration,
                    message:
                        "write-behind bounds, attempts and backoff must be positive, and the outbox lease at least 1 s"
                )
            }
            guard self.remoteReadTimeout.map({ $0 > .zero }) ?? true, self.remoteBreaker.failureThreshold >= 1,
                self.remoteBreaker.openDuration > .zero
            else {
                throw PanzaError(
                    code: .invalidConfiguration,
                    message: "remoteReadTimeout, the breaker's failure threshold and open duration must be positive"
                )
            }
            guard self.closeTimeout > .zero else {
                throw PanzaError(code: .invalidConfiguration, message: "closeTimeout must be positive")
            }
            try self.defaultFreshness?.validate()
        }
    }
}

extension TieredCache.Configuration {
    /// Where and how often a cache reports its metrics.
    public struct MetricsReporting: Sendable {
        /// The value of the `cache` dimension of every metric, to tell several caches apart.
        public var label: String
        /// How often counters and gauges are pushed (load latencies are recorded as they happen).
        public var interval: Duration
        /// The metrics backend; `nil` for `MetricsSystem.factory`, the one the program bootstrapped.
        public var factory: (any MetricsFactory)?

        /// Settings with defaults; see each property.
        public init(label: String = "default", interval: Duration = .seconds(10), factory: (any MetricsFactory)? = nil)
        {
            self.label = label
            self.interval = interval
            self.factory = factory
        }
    }
}
