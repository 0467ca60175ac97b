public import CoreMetrics
import Foundation

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

            /// A policy of `maxAttempts` attempts in all, backing off from `baseDelay` doubling to `maxDelay`.
            public init(
                maxAttempts: Int = 4, baseDelay: Duration = .milliseconds(100), maxDelay: Duration = .seconds(5)
            ) {
                self.maxAttempts = max(1, maxAttempts)
                self.baseDelay = baseDelay
                self.maxDelay = maxDelay
            }

            /// One attempt, no retry.
            public static let none = RetryPolicy(maxAttempts: 1)
        }

        /// The bucket's name.
        public var bucket: String
        /// The region; given `nil` at creation, `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's
        /// `region`, then `us-east-1`.
        public var region: String
        /// The endpoint URL; `nil` for `AWS_ENDPOINT_URL_S3`, then `AWS_ENDPOINT_URL`, then AWS.
        public var endpoint: String?
        /// How the bucket appears in URLs.
        public var addressing: Addressing
        /// Fixed credentials; `nil` to use ``credentialProvider``.
        public var credentials: S3Credentials?
        /// Where credentials come from when ``credentials`` is `nil`; `nil` for an
        /// ``S3CredentialChain`` over ``environment`` and ``profile`` (the AWS SDKs' order,
        /// refreshing temporary credentials).
        public var credentialProvider: (any S3CredentialProvider)?
        /// The only profile of the shared AWS files to use; `nil` for the whole chain, with
        /// `AWS_PROFILE` or `default`.
        public var profile: String?
        /// The longest one request may take, retries excluded: connect and headers within it, and
        /// a piece of the body arriving after it ends the request (a server that drips its answer
        /// is cut off); a body that stops altogether is cut off after this long without a byte.
        public var requestTimeout: Duration
        /// The longest a connection may take to open.
        public var connectTimeout: Duration
        /// Retries of failed requests.
        public var retry: RetryPolicy
        /// Whether PUT bodies are hashed into the signature (`false`: `UNSIGNED-PAYLOAD`, over https
        /// only: over plain http bodies are always signed, since nothing else protects them).
        public var signsPayload: Bool
        /// Connections kept per host.
        public var maxConnections: Int
        /// Bodies of at least this many bytes are uploaded in parts.
        public var multipartThreshold: Int
        /// The size of each part (S3's minimum is 5 MiB), and of each range of a large object's GET.
        public var multipartPartSize: Int
        /// How many parts of one object are uploaded, or ranges of one object fetched, at once: 4 by default.
        ///
        /// A GET asks for the first ``multipartPartSize`` bytes; when the object is longer, the rest is
        /// fetched in ranges of that size, this many at a time, each bound to the first answer's
        /// ETag (`If-Match`), so that an object replaced meanwhile is never stitched from two versions.
        public var multipartConcurrency: Int = 4
        /// The largest object body a GET reads; a larger one (by `Content-Length`, or as it
        /// streams) fails with ``S3Error/Code/invalidResponse`` and is not retried. Error and
        /// listing bodies are capped at 16 MiB. 1 GiB plus 1 MiB by default.
        public var maxResponseBytes: Int = (1 << 30) + (1 << 20)
        /// The longest `Retry-After` the client waits for; a server asking for more fails the
        /// request at once. 30 s by default.
        public var maxRetryAfter: Duration = .seconds(30)
        /// Where the client counts its requests (`panza_s3_requests_total`, dimensions `operation`
        /// and `status`); `nil` for `MetricsSystem.factory`.
        public var metricsFactory: (any MetricsFactory)? = nil
        /// The client's retry budget in tokens (the AWS SDKs' standard retry quota): a retry costs
        /// 5 (10 after a timeout or connection failure), a request that succeeds at once earns 1
        /// back. When it runs out, failures are not retried until successes refill it, so that a
        /// throttling or failing S3 is not hit with a retry storm. 500 by default; `nil` for none.
        public var retryBudget: Int? = 500
        /// The account id that must own the bucket, sent as `x-amz-expected-bucket-owner` with every
        /// request: S3 then refuses (403) to touch a bucket of the same name that another account
        /// owns, such as one re-created after a deletion. `nil` (the default) sends nothing.
        public var expectedBucketOwner: String?
        /// The `AWS_*` variables (and `HOME`) of the environment the configuration was made with;
        /// nothing else of the environment is kept. Secrets among them are redacted from
        /// descriptions, dumps and mirrors.
        public var environment: [String: String]

        /// Settings with defaults for everything but the bucket; see each property.
        public init(
            bucket: String,
            region: String? = nil,
            endpoint: String? = nil,
            addressing: Addressing = .automatic,
            credentials: S3Credentials? = nil,
            credentialProvider: (any S3CredentialProvider)? = nil,
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
            let environment = (environment ?? ProcessInfo.processInfo.environment).filter { name, _ in
                name.hasPrefix("AWS_") || name == "HOME"
            }
            self.bucket = bucket
            self.region = S3Region.resolve(region, profile: profile, environment: environment)
            self.endpoint = endpoint
            self.addressing = addressing
            self.credentials = credentials
            self.credentialProvider = credentialProvider
            self.profile = profile
            self.requestTimeout = requestTimeout
            self.connectTimeout = connectTimeout
            self.retry = retry
            self.signsPayload = signsPayload
            self.maxConnections = maxConnections
            self.multipartThreshold = multipartThreshold
            self.multipartPartSize = multipartPartSize
            self.environment = environment
        }
    }
}

extension S3Client.Configuration: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// Every setting, with secrets (the secret key, session tokens, and `AWS_*` variables that hold
    /// them) redacted.
    public var customMirror: Mirror {
        Mirror(
            self,
            children: [
                "bucket": self.bucket, "region": self.region, "endpoint": self.endpoint as Any,
                "addressing": self.addressing, "credentials": self.credentials as Any,
                "credentialProvider": self.credentialProvider.map { "\($0)" } as Any, "profile": self.profile as Any,
                "requestTimeout": self.requestTimeout, "connectTimeout": self.connectTimeout, "retry": self.retry,
                "signsPayload": self.signsPayload, "maxConnections": self.maxConnections,
                "multipartThreshold": self.multipartThreshold, "multipartPartSize": self.multipartPartSize,
                "multipartConcurrency": self.multipartConcurrency,
                "maxResponseBytes": self.maxResponseBytes, "maxRetryAfter": self.maxRetryAfter,
                "retryBudget": self.retryBudget as Any,
                "expectedBucketOwner": self.expectedBucketOwner as Any,
                "environment": S3Redaction.redacted(self.environment),
            ],
            displayStyle: .struct
        )
    }

    /// The bucket, region, endpoint and credentials' source; never a secret.
    public var description: String {
        "S3Client.Configuration(bucket: \(self.bucket), region: \(self.region), "
            + "endpoint: \(self.endpoint ?? "AWS"), credentials: \(self.credentials.map { "\($0)" } ?? self.credentialProvider.map { "\($0)" } ?? "the AWS credential chain"))"
    }

    /// Same as `description`.
    public var debugDescription: String { self.description }
}

/// The one place that decides what a secret looks like in text.
enum S3Redaction {
    static let placeholder = "<redacted>"

    /// Whether an environment variable holds a secret.
    static func isSecret(_ name: String) -> Bool {
        let upper = name.uppercased()
        return upper.contains("SECRET") || upper.contains("TOKEN") || upper.contains("PASSWORD")
    }

    static func redacted(_ environment: [String: String]) -> [String: String] {
        Dictionary(
            uniqueKeysWithValues: environment.map { ($0.key, self.isSecret($0.key) ? self.placeholder : $0.value) })
    }
}
