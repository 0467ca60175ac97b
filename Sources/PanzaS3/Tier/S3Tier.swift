import Foundation
public import Logging
public import Panza
import Synchronization

/// The shared tier: envelopes in an S3 bucket, so that one machine pays for a call and every other
/// machine gets the result.
///
/// ```swift
/// configuration.remote = try S3Tier(configuration: .init(
///     bucket: "team-cache", prefix: "v1", region: "us-east-1",
///     endpoint: "http://127.0.0.1:8333"))
/// ```
///
/// Objects hold the same envelope bytes as SQLite, under `{prefix}/{id}/{hash}` for memoized calls
/// (Python panza's `{prefix}/{fn_id}/{arg_hash}`) and `{prefix}/_keys/{percent-encoded key}` for
/// plain keys. A read is one GET (a 404 is a miss). With a SQLite tier above it, writes reach S3
/// from the SQLite outbox, so they survive crashes; `TieredCache.flush()` waits for them.
/// By default S3 failures never reach callers (reads fall back to the loader, uploads stay queued);
/// set ``Configuration/strict`` to see them.
///
/// Busts are recorded in an invalidation log in the bucket, which every cache on the prefix polls
/// (``Configuration/invalidationPollInterval``); an id bust starts a new generation of the id's
/// objects (`{prefix}/{id}/~{generation}/{hash}`). With ``Configuration/signingKeys`` objects are
/// signed and verified, with ``Configuration/encryptionKeys`` encrypted; see `docs/s3-tier.md`.
public final class S3Tier: CacheTier, PieceWiseStoring, PieceWiseReading, InvalidationSharing {
    /// `"s3"`, in statistics and logs.
    public let name = "s3"
    /// The settings the tier was made with.
    public let configuration: Configuration
    /// The client, for operations the tier does not offer.
    public let client: S3Client
    private let bucketReady = Mutex(false)
    private let markerWritten = Mutex(false)
    private let logger: Logger
    /// The check that the prefix lies inside no other cache's prefix, run once (again after a
    /// failure that may pass).
    private let layoutCheck = Mutex<Task<Void, any Error>?>(nil)
    /// The bucket's record of removals (busts), which every cache on the prefix follows.
    let invalidationLog: InvalidationLog
    /// The first read of the invalidation log, which object keys wait for (generations).
    private let firstSync = Mutex<Task<Void, any Error>?>(nil)
    /// Signs uploads and verifies reads (``Configuration/signingKeys``).
    let signature: ObjectSignature
    /// Encrypts uploads and decrypts reads (``Configuration/encryptionKeys``).
    let encryption: ObjectEncryption
    /// When the background collection last started (``Configuration/backgroundCollectionOlderThan``).
    private let lastCollection = Mutex<ContinuousClock.Instant?>(nil)
    /// Refreshes of old objects in flight, and the objects already refreshed by this process.
    private let refreshes = Mutex<(inFlight: Int, done: Set<String>)>((0, []))
    /// The name of the folder of the invalidation log, under the prefix.
    public static let invalidationFolderName = "_invalidations"

    /// The name of the marker object each tier writes at `{prefix}/_panza`, so that caches with
    /// nested prefixes see each other (memoize ids starting with `_` are reserved, so no entry
    /// can have this key).
    public static let prefixMarkerName = "_panza"

    /// Creates the tier. No request is sent until the first lookup or write.
    ///
    /// - Throws: ``S3Error`` when the configuration is invalid or no credentials are found.
    public init(configuration: Configuration, logger: Logger? = nil) throws {
        var clientConfiguration = configuration.client
        clientConfiguration.bucket = configuration.bucket
        clientConfiguration.region = configuration.region
        clientConfiguration.endpoint = configuration.endpoint
        clientConfiguration.credentials = configuration.credentials
        clientConfiguration.credentialProvider = configuration.credentialProvider
        clientConfiguration.profile = configuration.profile
        // An empty prefix would make a purge or a bust of everything delete the whole bucket; a dot
        // segment names another folder than it seems.
        let segments = configuration.prefix.split(separator: "/", omittingEmptySubsequences: false)
        guard !configuration.prefix.isEmpty, !segments.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." })
        else {
            throw S3Error(
                code: .invalidConfiguration,
                message: "the prefix '\(configuration.prefix)' must be non-empty, without a leading or trailing '/', "
                    + "'//', or '.' and '..' segments"
            )
        }
        var keys = configuration.signingKeys
        if keys == nil, let text = ProcessInfo.processInfo.environment[S3SigningKey.environmentVariable] {
            keys = try S3SigningKey.parse(text)
        }
        var encryptionKeys = configuration.encryptionKeys
        if encryptionKeys == nil, let text = ProcessInfo.processInfo.environment[S3EncryptionKey.environmentVariable] {
            encryptionKeys = try S3EncryptionKey.parse(text)
        }
        self.encryption = ObjectEncryption(
            bucket: configuration.bucket, prefix: configuration.prefix, keys: encryptionKeys ?? [],
            acceptsPlain: configuration.signaturePolicy == .migrating)
        self.configuration = configuration
        self.logger = logger ?? .panzaDisabled
        self.client = try S3Client(configuration: clientConfiguration, logger: logger)
        self.invalidationLog = InvalidationLog(prefix: configuration.prefix)
        self.signature = ObjectSignature(
            bucket: configuration.bucket, prefix: configuration.prefix, keys: keys ?? [],
            acceptsUnsigned: configuration.signaturePolicy == .migrating)
        if let first = keys?.first, !first.canSign, configuration.policy != .readOnly {
            self.logger.info(
                "panza: the first S3 signing key only verifies: this cache reads the bucket and never writes it",
                metadata: ["key": "\(first.id)"])
        }
    }

    /// `false` for the write-only policy.
    public var isReadable: Bool { self.configuration.policy != .writeOnly }
    /// `false` for the read-only policy, and when the first signing key only verifies (an Ed25519
    /// public key: this machine reads what others signed and writes nothing).
    public var isWritable: Bool {
        self.configuration.policy != .readOnly && (self.signature.signingKey?.canSign ?? true)
    }
    /// ``Configuration/invalidationPollInterval``.
    public var invalidationPollInterval: Duration? { self.configuration.invalidationPollInterval }

    /// Reads the bucket's invalidation log (one LIST, from a little before the newest entry seen)
    /// and returns the removals other caches recorded since the last call (`InvalidationSharing`).
    ///
    /// - Complexity: one request per 1,000 new entries (one in the steady state); the first call
    ///   lists the whole log (which `panza gc` keeps short).
    public func newInvalidations() async throws -> [CacheInvalidation] {
        if self.invalidationLog.isSynced {
            try await self.invalidationLog.sync(client: self.client, retry: self.configuration.readRetry)
        } else {
            // The first read of the log is shared with the first lookup, which needs it too.
            try await self.ensureSynced(retry: self.configuration.readRetry)
        }
        self.collectGarbageIfDue()
        return self.invalidationLog.takeUndelivered()
    }

    /// Starts a background garbage collection when this process is the one that collects and the
    /// interval has passed.
    private func collectGarbageIfDue() {
        guard let age = self.configuration.backgroundCollectionOlderThan else { return }
        let now = ContinuousClock.now
        let due = self.lastCollection.withLock { last -> Bool in
            if let last, now - last < self.configuration.backgroundCollectionInterval { return false }
            last = now
            return true
        }
        guard due else { return }
        let cutoff = WallClock.nowMilliseconds() - age.wholeMilliseconds
        Task {
            do {
                let plan = try await self.planGarbageCollection(cutoffMilliseconds: cutoff)
                try await self.collectGarbage(plan)
                self.logger.info(
                    "panza: collected the S3 prefix's garbage",
                    metadata: [
                        "deleted": "\(plan.all.count)", "bytes": "\(plan.bytes)", "kept": "\(plan.kept)",
                    ])
            } catch {
                self.logger.warning(
                    "panza: background garbage collection failed; it runs again at the next interval",
                    metadata: ["error": "\(error)"])
            }
        }
    }
    /// ``Configuration/strict``.
    public var failuresReachCallers: Bool { self.configuration.strict }

    /// A request that S3 refused for what it is (a 4xx other than a timeout, throttling, a skewed
    /// clock or expired credentials) fails the same way every time: the upload goes to the dead
    /// letters at once instead of blocking the uploads behind it.
    public func isPermanentFailure(_ error: any Error) -> Bool {
        guard let error = error as? S3Error, error.code == .http, let status = error.httpStatus else { return false }
        guard (400..<500).contains(status), ![408, 429].contains(status) else { return false }
        let transient: Set<String> = [
            "SlowDown", "RequestTimeout", "RequestTimeTooSkewed", "ExpiredToken", "TokenRefreshRequired",
            "NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
        ]
        return !transient.contains(error.s3Code ?? "")
    }

    /// The object key of a cache key, in the current generation of its id.
    package func objectKey(for key: CacheKey) -> String {
        self.objectKey(for: key, generation: self.invalidationLog.generation(of: key.namespace))
    }

    /// The object key of a cache key in a generation of its id: `{prefix}/{id}/{hash}` before the
    /// id's first bust, `{prefix}/{id}/~{generation}/{hash}` after.
    package func objectKey(for key: CacheKey, generation: String?) -> String {
        let base = self.configuration.prefix.isEmpty ? "" : self.configuration.prefix + "/"
        let folder = generation.map { "~" + $0 + "/" } ?? ""
        if key.namespace.isEmpty {
            return base + "_keys/" + folder + URIEncoding.encode(key.rawValue)
        }
        // `{id}/{hash}`; the part after the id is percent-encoded into one segment, which leaves a
        // hex hash as it is and keeps a raw key's `/`, `.` and `..` from becoming path segments.
        let idPrefix = key.namespace + "/"
        guard key.rawValue.hasPrefix(idPrefix) else {
            return base + key.namespace + "/" + folder + URIEncoding.encode(key.rawValue)
        }
        return base + idPrefix + folder + URIEncoding.encode(String(key.rawValue.dropFirst(idPrefix.count)))
    }

    /// The object-key prefix of a namespace (a memoize id), or of everything for `nil`.
    package func objectPrefix(namespace: String?) -> String {
        let base = self.configuration.prefix.isEmpty ? "" : self.configuration.prefix + "/"
        guard let namespace else { return base }
        return base + (namespace.isEmpty ? "_keys" : namespace) + "/"
    }

    /// One GET of the key's object (at most one retry: ``Configuration/readRetry``); a 404 is `nil`.
    ///
    /// - Complexity: one request; the first call also checks the prefix's ancestors (one HEAD per
    ///   level of the prefix).
    ///
    /// With ``Configuration/signingKeys``, the object's signature is verified before anything else
    /// of it is read, and the unsigned envelope is returned. An object made before a removal that
    /// covers it (a bust recorded in the invalidation log) is a miss.
    ///
    /// - Throws: `PanzaError` with code `untrustedBlob` when the signature does not verify.
    public func blob(forKey key: CacheKey) async throws -> [UInt8]? {
        try await self.checkLayout()
        try await self.ensureSynced(retry: self.configuration.readRetry)
        let objectKey = self.objectKey(for: key)
        let lastModified = S3Client.LastModifiedReport()
        guard
            let object = try await LoadLimits.run(
                within: self.configuration.readLimits,
                {
                    try await self.client.get(
                        key: objectKey, retry: self.configuration.readRetry, lastModified: lastModified)
                })
        else { return nil }
        let envelope = try self.encryption.decrypted(
            try self.signature.verified(object, objectKey: objectKey), objectKey: objectKey)
        guard !self.isInvalidated(key, createdAt: BlobEnvelope.createdAtMilliseconds(ofStored: envelope)) else {
            return nil
        }
        self.refreshIfOld(objectKey, lastModified: lastModified.milliseconds)
        return envelope
    }

    /// Copies an object last written before ``Configuration/refreshAfter`` onto itself, in the
    /// background, so that garbage collection by last use keeps it.
    private func refreshIfOld(_ objectKey: String, lastModified: Int64?) {
        guard let refreshAfter = self.configuration.refreshAfter, self.configuration.policy != .readOnly,
            let lastModified
        else { return }
        guard WallClock.nowMilliseconds() - lastModified >= refreshAfter.wholeMilliseconds else { return }
        let start = self.refreshes.withLock { refreshes -> Bool in
            guard refreshes.inFlight < 2, !refreshes.done.contains(objectKey) else { return false }
            if refreshes.done.count >= 10_000 { refreshes.done = [] }
            refreshes.done.insert(objectKey)
            refreshes.inFlight += 1
            return true
        }
        guard start else { return }
        Task {
            defer { self.refreshes.withLock { $0.inFlight -= 1 } }
            do {
                try await LoadLimits.run(within: self.configuration.writeLimits) {
                    try await self.client.touch(key: objectKey)
                }
                self.logger.debug("panza: refreshed an S3 object's last use", metadata: ["object": "\(objectKey)"])
            } catch {
                self.logger.debug(
                    "panza: could not refresh an S3 object's last use",
                    metadata: ["object": "\(objectKey)", "error": "\(error)"])
            }
        }
    }

    /// Whether a value of `key` made at `createdAt` was made before a removal that covers it (a
    /// bust recorded in the invalidation log, as the tier last read it): such a value is neither
    /// uploaded nor served.
    package func isInvalidated(_ key: CacheKey, createdAt: Int64?) -> Bool {
        guard let removed = self.invalidationLog.removalStamp(covering: key) else { return false }
        return (createdAt ?? .min) < removed
    }

    /// Reads the invalidation log once before the first object key is computed (the generations
    /// of ids decide where objects are).
    ///
    /// - Parameter retry: the retries of the LIST (a lookup passes ``Configuration/readRetry``).
    private func ensureSynced(retry: S3Client.Configuration.RetryPolicy? = nil) async throws {
        guard !self.invalidationLog.isSynced else { return }
        let task = self.firstSync.withLock { existing -> Task<Void, any Error> in
            if let existing { return existing }
            let task = Task { try await self.invalidationLog.sync(client: self.client, retry: retry) }
            existing = task
            return task
        }
        do {
            try await task.value
        } catch {
            self.firstSync.withLock { if $0 == task { $0 = nil } }
            throw error
        }
    }

    /// Applies operations in order. Between removals of a namespace or of everything, only the last
    /// operation of each key is sent (a key removed, then stored again, has its removal recorded
    /// in the invalidation log all the same), and those run concurrently
    /// (``Configuration/maxConcurrentWrites``).
    ///
    /// - Complexity: one request per key (PUT, or DELETE and the log entry of a key removal); a
    ///   removal of a namespace or of everything is one log entry, whatever the number of objects.
    public func apply(_ operations: [CacheTierOperation]) async throws {
        try await self.apply(operations, madeAtMilliseconds: Array(repeating: nil, count: operations.count))
    }

    /// Applies operations in order, recording each removal in the invalidation log with the time
    /// it was made (`InvalidationSharing`), so that other caches keep the values made after it.
    ///
    /// - Parameters:
    ///   - operations: the operations, in order.
    ///   - madeAtMilliseconds: when each was made (milliseconds since 1970), `nil` for now.
    public func apply(_ operations: [CacheTierOperation], madeAtMilliseconds: [Int64?]) async throws {
        try await self.ensureBucket()
        try await self.checkLayout()
        try await self.ensureMarker()
        try await self.ensureSynced()
        var segment: [String: KeyWork] = [:]
        var order: [String] = []
        func flushSegment() async throws {
            let work = order.compactMap { segment[$0] }
            segment = [:]
            order = []
            try await self.run(work)
        }
        for (index, operation) in operations.enumerated() {
            let madeAt = index < madeAtMilliseconds.count ? madeAtMilliseconds[index] : nil
            switch operation {
            case .store(let key, _, _), .remove(let key):
                let objectKey = self.objectKey(for: key)
                var work = segment[objectKey] ?? KeyWork(key: key, operation: operation)
                if segment[objectKey] == nil { order.append(objectKey) }
                if case .remove = operation { work.removedAt = madeAt ?? WallClock.nowMilliseconds() }
                work.operation = operation
                segment[objectKey] = work
            case .removeNamespace(let namespace):
                // A new generation: one request, whatever the number of objects (gc deletes them).
                try await flushSegment()
                try await self.recordInvalidation(.namespace(namespace), madeAt: madeAt)
            case .removeAll:
                try await flushSegment()
                try await self.recordInvalidation(.all, madeAt: madeAt)
            }
        }
        try await flushSegment()
    }

    /// The last operation of a key within a segment, and when the key was last removed in it.
    private struct KeyWork {
        var key: CacheKey
        var operation: CacheTierOperation
        var removedAt: Int64?
    }

    /// Feeds the key's object to `sink` as its ranges arrive (`PieceWiseReading`): one GET, then
    /// parallel ranged GETs for a large object, at most one retry (``Configuration/readRetry``).
    ///
    /// - Parameters:
    ///   - key: the entry's key.
    ///   - sink: where the object's bytes go, in order.
    /// - Returns: `false` when the bucket holds no object for `key`.
    /// - Complexity: one request per ``S3Client/Configuration/multipartPartSize`` of the object.
    public func readBlob(forKey key: CacheKey, into sink: BlobSink) async throws -> Bool {
        try await self.checkLayout()
        try await self.ensureSynced(retry: self.configuration.readRetry)
        let objectKey = self.objectKey(for: key)
        let decrypter = DecryptingSink(encryption: self.encryption, objectKey: objectKey, downstream: sink)
        let verifier = VerifyingSink(signature: self.signature, objectKey: objectKey, downstream: decrypter.sink)
        let lastModified = S3Client.LastModifiedReport()
        let found = try await LoadLimits.run(within: self.configuration.readLimits) {
            try await self.client.get(
                key: objectKey, retry: self.configuration.readRetry, into: verifier.sink, lastModified: lastModified)
        }
        guard found else { return false }
        try verifier.finish()
        try decrypter.finish()
        guard !self.isInvalidated(key, createdAt: verifier.createdAtMilliseconds) else { return false }
        self.refreshIfOld(objectKey, lastModified: lastModified.milliseconds)
        return true
    }

    /// The object this tier uploads for `envelope` under `key`: encrypted with the first
    /// ``Configuration/encryptionKeys`` key and signed with the first ``Configuration/signingKeys``
    /// key, when there are keys. For tools that write entries to the bucket on their own.
    ///
    /// - Parameters:
    ///   - envelope: a version 2 `BlobEnvelope`, encoded.
    ///   - key: the entry's key; the object is bound to its object key in this tier's bucket and prefix.
    /// - Throws: `S3Error` when a key cannot sign.
    public func object(sealing envelope: [UInt8], forKey key: CacheKey) throws -> [UInt8] {
        let objectKey = self.objectKey(for: key)
        return try self.signature.signed(
            try self.encryption.encrypted(envelope, objectKey: objectKey), objectKey: objectKey)
    }

    /// The envelope inside an object read from the bucket under `key`, checked as a lookup checks
    /// it: signature first (in constant time, before anything else of the object is read), then
    /// decryption.
    ///
    /// - Parameters:
    ///   - object: the object's bytes.
    ///   - key: the entry's key the object was read under.
    /// - Throws: `PanzaError` with code `untrustedBlob` when the object is refused.
    public func envelope(opening object: [UInt8], forKey key: CacheKey) throws -> [UInt8] {
        let objectKey = self.objectKey(for: key)
        return try self.encryption.decrypted(
            try self.signature.verified(object, objectKey: objectKey), objectKey: objectKey)
    }

    /// Records a removal in the invalidation log, for every cache on the prefix.
    private func recordInvalidation(_ scope: CacheInvalidation.Scope, madeAt: Int64? = nil) async throws {
        try await LoadLimits.run(within: self.configuration.writeLimits) {
            try await self.invalidationLog.record(
                scope, madeAt: madeAt, client: self.client, now: WallClock.nowMilliseconds())
        }
    }

    /// Uploads a large envelope from its pieces as a multipart object, holding at most
    /// ``S3Client/Configuration/multipartConcurrency`` parts at once (`PieceWiseStoring`).
    ///
    /// - Parameters:
    ///   - key: the entry's key.
    ///   - byteCount: the envelope's length.
    ///   - expiresAtMilliseconds: when the entry expires; S3 keeps no expiry (readers check the envelope).
    ///   - pieces: the envelope's bytes, in order.
    /// - Complexity: one request per part, plus two.
    public func store(
        key: CacheKey, byteCount: Int, expiresAtMilliseconds: Int64?, pieces: BlobPieces
    ) async throws {
        try await self.ensureBucket()
        try await self.checkLayout()
        try await self.ensureMarker()
        try await self.ensureSynced()
        // The first piece holds the header: a value made before a bust of it is not uploaded.
        let first = try await pieces.piece(0)
        guard !self.isInvalidated(key, createdAt: BlobEnvelope.createdAtMilliseconds(ofStored: first)) else {
            self.logger.debug("panza: not uploading a value made before a bust of it", metadata: ["key": "\(key)"])
            return
        }
        let replayed = BlobPieces(count: pieces.count) { index in index == 0 ? first : try await pieces.piece(index) }
        let objectKey = self.objectKey(for: key)
        var signed = (byteCount: byteCount, pieces: replayed)
        if let encryptionKey = self.encryption.encryptionKey {
            let encrypting = EncryptingPieces(
                original: replayed, encryption: self.encryption, key: encryptionKey, objectKey: objectKey)
            signed = (
                ObjectEncryption.encryptedLength(envelopeLength: byteCount, key: encryptionKey), encrypting.pieces
            )
        }
        if let signingKey = self.signature.signingKey, signingKey.canSign {
            let signing = SigningPieces(
                original: signed.pieces, signature: self.signature, key: signingKey, objectKey: objectKey)
            signed = (signing.byteCount(unsigned: signed.byteCount), signing.pieces)
        }
        let upload = signed
        try await LoadLimits.run(within: self.configuration.writeLimits) {
            try await self.client.put(key: objectKey, byteCount: upload.byteCount, pieces: upload.pieces)
        }
    }

    /// Closes the client's connections.
    public func close() async throws {
        try await self.client.shutdown()
    }

    /// Every object key of entries under the tier's prefix (the prefix marker and the
    /// invalidation log excluded), of every generation.
    package func allObjectKeys() async throws -> [String] {
        let log = self.invalidationLog.logPrefix
        return try await self.client.listAll(prefix: self.objectPrefix(namespace: nil)).filter {
            !self.isPrefixMarker($0) && !$0.hasPrefix(log)
        }
    }

    /// Deletes every object of the prefix (entries of every generation; the marker, the
    /// invalidation log and nested caches' prefixes are kept), and records a removal of everything
    /// so that other caches drop their local copies: what `panza purge` does.
    package func purgeAll() async throws {
        try await self.ensureSynced()
        try await self.recordInvalidation(.all)
        try await self.removeAll(prefix: self.objectPrefix(namespace: nil))
    }

    /// Whether `objectKey` is the marker of this prefix or of one nested inside it (a plain key
    /// named `_panza` lives under `_keys/` and is not one).
    private func isPrefixMarker(_ objectKey: String) -> Bool {
        objectKey.hasSuffix("/" + Self.prefixMarkerName) && !objectKey.hasPrefix(self.configuration.prefix + "/_keys/")
    }

    // MARK: Internals

    private func run(_ work: [KeyWork]) async throws {
        guard !work.isEmpty else { return }
        try await withThrowingTaskGroup(of: Void.self) { group in
            var running = 0
            for item in work {
                if running >= self.configuration.maxConcurrentWrites {
                    try await group.next()
                    running -= 1
                }
                group.addTask {
                    try await LoadLimits.run(within: self.configuration.writeLimits) {
                        // A removal reaches other caches through the log even when a store of the
                        // key follows it (their copies are of the removed value).
                        if let removedAt = item.removedAt {
                            if case .remove = item.operation {
                                try await self.client.delete(key: self.objectKey(for: item.key))
                            }
                            try await self.invalidationLog.record(
                                .key(item.key), madeAt: removedAt, client: self.client, now: WallClock.nowMilliseconds()
                            )
                        }
                        if case .store(let key, let blob, _) = item.operation {
                            try await self.upload(blob, key: key)
                        }
                    }
                }
                running += 1
            }
            try await group.waitForAll()
        }
    }

    /// Uploads an envelope (signed with the first signing key), unless it was made before a bust
    /// that covers it: a value computed before a bust elsewhere must not come back after it.
    private func upload(_ blob: [UInt8], key: CacheKey) async throws {
        guard !self.isInvalidated(key, createdAt: BlobEnvelope.createdAtMilliseconds(ofStored: blob)) else {
            self.logger.debug("panza: not uploading a value made before a bust of it", metadata: ["key": "\(key)"])
            return
        }
        var envelope = blob
        if envelope.count >= 5, envelope[4] == 1,
            self.signature.signingKey != nil || self.encryption.encryptionKey != nil
        {
            // A version 1 envelope (written by an older release) has no room for a signature.
            envelope = try BlobEnvelope.decode(envelope).encoded()
        }
        let objectKey = self.objectKey(for: key)
        let object = try self.signature.signed(
            try self.encryption.encrypted(envelope, objectKey: objectKey), objectKey: objectKey)
        try await self.client.put(key: objectKey, body: object)
    }

    /// Deletes every object under `prefix`, except the marker and whatever lies under the prefix
    /// of another cache nested inside (found by its marker).
    private func removeAll(prefix: String) async throws {
        let listed = try await self.client.listAll(prefix: prefix)
        let ownMarker = self.configuration.prefix + "/" + Self.prefixMarkerName
        let nested = listed.filter { self.isPrefixMarker($0) && $0 != ownMarker }
            .map { String($0.dropLast(Self.prefixMarkerName.count)) }
        if !nested.isEmpty {
            self.logger.warning(
                "panza: other caches' prefixes lie inside this one; their objects are left alone",
                metadata: ["prefix": "\(self.configuration.prefix)", "nested": "\(nested.joined(separator: ", "))"]
            )
        }
        let log = self.invalidationLog.logPrefix
        let keys = listed.filter { key in
            key != ownMarker && !key.hasPrefix(log) && !nested.contains { key.hasPrefix($0) }
        }
        try await LoadLimits.run(within: self.configuration.writeLimits) {
            try await self.client.delete(keys: keys)
        }
    }

    /// Creates the bucket only when HEAD says it does not exist, so that an identity without
    /// `s3:CreateBucket` can still write to an existing bucket.
    private func ensureBucket() async throws {
        guard self.configuration.createsBucket, !self.bucketReady.withLock({ $0 }) else { return }
        if try await !self.client.bucketExists() {
            try await self.client.createBucket()
        }
        self.bucketReady.withLock { $0 = true }
    }

    /// Refuses a prefix that lies inside another cache's prefix (its purge or its memoize ids
    /// would reach this cache's objects, and this cache's reads could return its entries), and
    /// writes this prefix's marker so that caches opened later see it.
    private func checkLayout() async throws {
        let task = self.layoutCheck.withLock { existing -> Task<Void, any Error> in
            if let existing { return existing }
            let task = Task { try await self.verifyLayout() }
            existing = task
            return task
        }
        do {
            try await task.value
        } catch let error as S3Error where error.code != .invalidConfiguration {
            self.layoutCheck.withLock { if $0 == task { $0 = nil } }
            throw error
        }
    }

    private func verifyLayout() async throws {
        let segments = self.configuration.prefix.split(separator: "/")
        for count in stride(from: 1, to: segments.count, by: 1) {
            let ancestor = segments[0..<count].joined(separator: "/")
            if try await self.markerExists(ancestor + "/" + Self.prefixMarkerName) {
                let error = S3Error(
                    code: .invalidConfiguration,
                    message:
                        "the prefix '\(self.configuration.prefix)' lies inside '\(ancestor)', the prefix of another Panza cache "
                        + "in this bucket: choose prefixes that do not nest"
                )
                self.logger.error("panza: \(error.message)")
                throw error
            }
        }
    }

    /// Whether a marker object exists. Without `s3:ListBucket`, S3 answers 403 instead of 404 for
    /// a missing object: that is taken as "absent", so that least-privilege identities work.
    private func markerExists(_ key: String) async throws -> Bool {
        do {
            return try await self.client.head(key: key) != nil
        } catch let error as S3Error where error.httpStatus == 403 {
            return false
        }
    }

    /// Writes `{prefix}/_panza` before the first write, so that caches with nested prefixes,
    /// opened before or after, see this one.
    private func ensureMarker() async throws {
        guard !self.markerWritten.withLock({ $0 }) else { return }
        let marker = self.configuration.prefix + "/" + Self.prefixMarkerName
        if try await !self.markerExists(marker) {
            try await self.client.put(key: marker, body: Array("panza cache prefix\n".utf8), contentType: "text/plain")
        }
        self.markerWritten.withLock { $0 = true }
    }
}
