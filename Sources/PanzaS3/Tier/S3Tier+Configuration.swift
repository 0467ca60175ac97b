import Foundation
public import Panza

extension S3Tier {
    /// What the cache may do with the S3 tier.
    public enum Policy: Hashable, Sendable {
        /// Read and write (the default).
        case readWrite
        /// Read only: never writes to S3; the local tiers are still written.
        case readOnly
        /// Write only: fills S3 but never reads from it.
        case writeOnly
    }

    /// Settings of an ``S3Tier``.
    public struct Configuration: Sendable {
        /// The bucket's name.
        public var bucket: String
        /// Prefix of every object key: objects are `{prefix}/{id}/{hash}` (see ``S3Tier``).
        public var prefix: String
        /// The region; given `nil` at creation, `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's
        /// `region`, then `us-east-1`.
        public var region: String
        /// The endpoint URL; `nil` for `AWS_ENDPOINT_URL_S3`, then `AWS_ENDPOINT_URL`, then AWS.
        public var endpoint: String?
        /// Fixed credentials; `nil` to use ``credentialProvider``.
        public var credentials: S3Credentials?
        /// Where credentials come from when ``credentials`` is `nil`; `nil` for the AWS credential
        /// chain (``S3CredentialChain``: environment, web identity, profile, container, EC2).
        public var credentialProvider: (any S3CredentialProvider)?
        /// The only profile of the shared AWS files to read; `nil` for the whole credential chain.
        public var profile: String?
        /// Whether the tier is read, written, or both.
        public var policy: Policy
        /// When `true`, S3 failures reach callers; by default a failed read is a miss and a failed
        /// upload stays queued.
        public var strict: Bool
        /// Create the bucket before the first write if it does not exist.
        public var createsBucket: Bool
        /// Uploads and deletions in flight at once.
        public var maxConcurrentWrites: Int
        /// Limits on foreground reads (GETs on a cache miss).
        public var readLimits: LoadLimits?
        /// Limits on background writes (uploads and deletions), kept apart so that they never starve reads.
        public var writeLimits: LoadLimits?
        /// Settings of the underlying client (addressing, timeouts, retries, multipart). Its retry
        /// policy is the uploads'.
        public var client: S3Client.Configuration
        /// Retries of a lookup's GET: a caller is waiting, so at most one retry by default (the
        /// cache also bounds the wait with `remoteReadTimeout`).
        public var readRetry = S3Client.Configuration.RetryPolicy(maxAttempts: 2, baseDelay: .milliseconds(50))

        /// Settings with defaults for everything but the bucket; see each property.
        public init(
            bucket: String,
            prefix: String = "panza",
            region: String? = nil,
            endpoint: String? = nil,
            credentials: S3Credentials? = nil,
            credentialProvider: (any S3CredentialProvider)? = nil,
            profile: String? = nil,
            policy: Policy = .readWrite,
            strict: Bool = false,
            createsBucket: Bool = true,
            maxConcurrentWrites: Int = 16,
            readLimits: LoadLimits? = nil,
            writeLimits: LoadLimits? = nil
        ) {
            self.bucket = bucket
            self.prefix = prefix
            self.client = S3Client.Configuration(
                bucket: bucket, region: region, endpoint: endpoint, credentials: credentials,
                credentialProvider: credentialProvider, profile: profile
            )
            self.region = self.client.region
            self.endpoint = endpoint
            self.credentials = credentials
            self.credentialProvider = credentialProvider
            self.profile = profile
            self.policy = policy
            self.strict = strict
            self.createsBucket = createsBucket
            self.maxConcurrentWrites = maxConcurrentWrites
            self.readLimits = readLimits
            self.writeLimits = writeLimits
        }
    }
}
