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

    /// Which objects a tier with signing keys reads.
    public enum SignaturePolicy: Hashable, Sendable {
        /// Only objects signed with one of the keys.
        case required
        /// Signed objects, verified, and unsigned ones too (and, with encryption keys, objects in
        /// clear): for a rollout, while the caches that wrote the bucket before have not all been
        /// given keys.
        case migrating
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
        /// The keys that sign uploads (the first) and verify reads (all); `nil` to read
        /// `PANZA_S3_SIGNING_KEYS` (see ``S3SigningKey/parse(_:)``), and no signing when it is unset.
        /// With keys, an object that is unsigned or whose signature does not verify is a miss (see
        /// `docs/s3-tier.md`, "Trust").
        public var signingKeys: [S3SigningKey]? = nil
        /// The keys that encrypt uploads (the first, AES-256-GCM) and decrypt reads (all); `nil` to
        /// read `PANZA_S3_ENCRYPTION_KEYS`, and no encryption when it is unset. With keys, an object
        /// in clear is a miss (unless ``signaturePolicy`` is ``SignaturePolicy/migrating``), and so
        /// is one that does not decrypt.
        public var encryptionKeys: [S3EncryptionKey]? = nil
        /// Whether unsigned objects are still read while keys are set; ``SignaturePolicy/required``
        /// by default.
        public var signaturePolicy: SignaturePolicy = .required
        /// How often an open cache reads the bucket's invalidation log (one LIST), so that busts
        /// made on other machines reach it; `nil` to read it only when
        /// `TieredCache.synchronizeInvalidations()` is called. 5 seconds by default.
        public var invalidationPollInterval: Duration? = .seconds(5)
        /// A reader served an object last written longer ago than this copies it onto itself in the
        /// background (one CopyObject, at most two at a time, once per object and process), so that
        /// garbage collection by last use (`panza gc`, or a lifecycle rule) keeps what is still read;
        /// `nil` to never refresh. 7 days by default. A read-only tier never refreshes.
        public var refreshAfter: Duration? = .seconds(7 * 86_400)
        /// Makes this process collect the prefix's garbage in the background, as `panza gc
        /// --older-than` does, deleting entries unused for this long: when the cache first reads the
        /// invalidation log, then every ``backgroundCollectionInterval``. Set it in one process of
        /// the team (a long-running service), not everywhere; `nil` (the default) for never. Keep
        /// it well above ``refreshAfter``.
        public var backgroundCollectionOlderThan: Duration? = nil
        /// How often a process with ``backgroundCollectionOlderThan`` collects; a day by default.
        public var backgroundCollectionInterval: Duration = .seconds(86_400)
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
