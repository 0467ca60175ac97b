public import Foundation

extension S3Client {
    /// Settings of an ``S3Client``.
    public struct Configuration: Sendable {
        /// How the bucket appears in URLs.
        public enum Addressing: Hashable, Sendable {
            /// `https://bucket.s3.region.amazonaws.com/key` for AWS, path style for other endpoints
            /// and for bucket names with dots.
            case automatic
            /// `http://endpoint/bucket/key`
            case path
            /// `http://bucket.endpoint/key`
            case virtualHosted
        }

        /// Retries of failed requests (5xx, 429, `SlowDown`, `RequestTimeout`, connection errors).
        public struct RetryPolicy: Hashable, Sendable {
            /// Attempts in all, the first included.
            public var maxAttempts: Int
            /// The first backoff; each retry doubles it, with full jitter.
            public var baseDelay: Duration
            /// The longest backoff.
            public var maxDelay: Duration

            public init(maxAttempts: Int = 4, baseDelay: Duration = .milliseconds(100), maxDelay: Duration = .seconds(5)) {
                self.maxAttempts = max(1, maxAttempts)
                self.baseDelay = baseDelay
                self.maxDelay = maxDelay
            }

            /// One attempt, no retry.
            public static let none = RetryPolicy(maxAttempts: 1)
        }

        public var bucket: String
        public var region: String
        /// The endpoint URL; `nil` for `AWS_ENDPOINT_URL_S3`, then `AWS_ENDPOINT_URL`, then AWS.
        public var endpoint: String?
        public var addressing: Addressing
        /// The credentials; `nil` to look them up (see ``S3Credentials/resolve(profile:environment:)``).
        public var credentials: S3Credentials?
        /// The profile of the shared AWS files to use; `nil` for `AWS_PROFILE` or `default`.
        public var profile: String?
        /// The longest a request may take, retries excluded.
        public var requestTimeout: Duration
        /// The longest a connection may take to open.
        public var connectTimeout: Duration
        public var retry: RetryPolicy
        /// Whether PUT bodies are hashed into the signature (`false`: `UNSIGNED-PAYLOAD`, over https
        /// only: over plain http bodies are always signed, since nothing else protects them).
        public var signsPayload: Bool
        /// Connections kept per host.
        public var maxConnections: Int
        /// Bodies of at least this many bytes are uploaded in parts.
        public var multipartThreshold: Int
        /// The size of each part (S3's minimum is 5 MiB).
        public var multipartPartSize: Int
        /// The environment to read `AWS_*` variables from.
        public var environment: [String: String]

        public init(
            bucket: String,
            region: String = "us-east-1",
            endpoint: String? = nil,
            addressing: Addressing = .automatic,
            credentials: S3Credentials? = nil,
            profile: String? = nil,
            requestTimeout: Duration = .seconds(30),
            connectTimeout: Duration = .seconds(5),
            retry: RetryPolicy = RetryPolicy(),
            signsPayload: Bool = true,
            maxConnections: Int = 32,
            multipartThreshold: Int = 16 << 20,
            multipartPartSize: Int = 8 << 20,
            environment: [String: String]? = nil
        ) {
            self.bucket = bucket
            self.region = region
            self.endpoint = endpoint
            self.addressing = addressing
            self.credentials = credentials
            self.profile = profile
            self.requestTimeout = requestTimeout
            self.connectTimeout = connectTimeout
            self.retry = retry
            self.signsPayload = signsPayload
            self.maxConnections = maxConnections
            self.multipartThreshold = multipartThreshold
            self.multipartPartSize = multipartPartSize
            self.environment = environment ?? ProcessInfo.processInfo.environment
        }
    }
}
