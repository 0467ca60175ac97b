import AsyncHTTPClient
import CoreMetrics
import Crypto
import Foundation
public import Logging
import NIOCore
import NIOHTTP1
public import Panza
import Synchronization

/// A small S3 client on AsyncHTTPClient, signing with ``SigV4Signer``.
///
/// It does what a cache needs: get, put (with `If-None-Match: *` and multipart for large bodies),
/// head, delete, batch delete, list, and create the bucket. Failed requests are retried with
/// exponential backoff and jitter on 5xx, 429, `SlowDown`, `RequestTimeout` and connection errors.
/// Errors are ``S3Error``s carrying S3's code, the HTTP status and the request id.
public final class S3Client: Sendable {
    /// What ``head(key:)`` reports.
    public struct ObjectInfo: Hashable, Sendable {
        /// The object's size in bytes.
        public var size: Int
        /// The object's ETag, as S3 sent it.
        public var eTag: String?
    }

    /// One page of ``list(prefix:startAfter:continuationToken:maxKeys:retry:)``.
    public struct ListPage: Hashable, Sendable {
        /// The keys of this page, decoded.
        public var keys: [String]
        /// The size of each key's object, in the same order.
        public var sizes: [Int]
        /// When each key's object was last written (or copied onto itself), by S3's clock, in
        /// milliseconds since 1970, in the same order; `nil` where the server sent no date it could parse.
        public var lastModifiedMilliseconds: [Int64?] = []
        /// Pass it to the next call; `nil` on the last page.
        public var continuationToken: String?
    }

    /// The settings the client was made with.
    public let configuration: Configuration
    private let credentialProvider: any S3CredentialProvider
    private let http: HTTPClient
    private let scheme: String
    private let hostHeader: String
    private let baseURL: String
    private let pathPrefix: String
    private let logger: Logger
    /// The server's clock minus ours, in milliseconds, learnt from `RequestTimeTooSkewed`.
    private let clockOffsetMilliseconds = Atomic<Int64>(0)
    private let isShutDown = Atomic(false)
    private let retryQuota: Mutex<RetryQuota?>
    private let requestCounters = Mutex<[String: Counter]>([:])
    private let signingKeys = SigningKeyCache()

    /// Creates a client. No request is sent until the first operation.
    ///
    /// - Throws: ``S3Error`` with ``S3Error/Code/missingCredentials`` or
    ///   ``S3Error/Code/invalidConfiguration``.
    public init(configuration: Configuration, logger: Logger? = nil) throws {
        guard Self.isValidBucketName(configuration.bucket) else {
            throw S3Error(
                code: .invalidConfiguration, message: "'\(configuration.bucket)' is not a valid S3 bucket name")
        }
        let endpointText =
            configuration.endpoint ?? configuration.environment["AWS_ENDPOINT_URL_S3"]
            ?? configuration.environment["AWS_ENDPOINT_URL"]
        let isAWS = endpointText == nil
        let endpoint = endpointText ?? "https://s3.\(configuration.region).amazonaws.com"
        guard let components = URLComponents(string: endpoint), let scheme = components.scheme?.lowercased(),
            scheme == "http" || scheme == "https", let host = components.host, !host.isEmpty
        else {
            throw S3Error(code: .invalidConfiguration, message: "'\(endpoint)' is not an http(s) endpoint URL")
        }
        let virtualHosted: Bool =
            switch configuration.addressing {
            case .path: false
            case .virtualHosted: true
            case .automatic: isAWS && !configuration.bucket.contains(".")
            }
        let defaultPort = scheme == "https" ? 443 : 80
        let portSuffix = components.port.map { $0 == defaultPort ? "" : ":\($0)" } ?? ""
        let requestHost = virtualHosted ? "\(configuration.bucket).\(host)" : host
        self.configuration = configuration
        self.scheme = scheme
        self.hostHeader = requestHost + portSuffix
        self.baseURL = "\(scheme)://\(requestHost)\(portSuffix)"
        self.pathPrefix = virtualHosted ? "" : "/\(configuration.bucket)"
        let logger = logger ?? .panzaDisabled
        self.logger = logger
        self.retryQuota = Mutex(configuration.retryBudget.map { RetryQuota(capacity: $0) })
        var httpConfiguration = HTTPClient.Configuration()
        httpConfiguration.timeout = .init(
            connect: .nanoseconds(configuration.connectTimeout.wholeNanoseconds),
            read: .nanoseconds(configuration.requestTimeout.wholeNanoseconds)
        )
        httpConfiguration.connectionPool = .init(
            idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: configuration.maxConnections)
        httpConfiguration.decompression = .disabled
        // A redirect could send signed headers (and a session token) to another host, or https to
        // http: S3 answers are never followed.
        httpConfiguration.redirectConfiguration = .disallow
        let http = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: httpConfiguration)
        self.http = http
        if let credentials = configuration.credentials {
            self.credentialProvider = StaticCredentialProvider(fixed: credentials)
        } else if let provider = configuration.credentialProvider {
            self.credentialProvider = provider
        } else {
            do {
                self.credentialProvider = try S3CredentialChain(
                    profile: configuration.profile,
                    region: configuration.region,
                    environment: configuration.environment,
                    http: http,
                    logger: logger
                )
            } catch {
                try? http.syncShutdown()
                throw error
            }
        }
    }

    /// Closes the connections. Calls after this fail.
    public func shutdown() async throws {
        guard !self.isShutDown.exchange(true, ordering: .relaxed) else { return }
        try await self.http.shutdown()
    }

    /// A client dropped without ``shutdown()`` (a cache that was never closed, a test that threw)
    /// closes its connections in the background instead of stopping the process.
    deinit {
        guard !self.isShutDown.load(ordering: .relaxed) else { return }
        let http = self.http
        Task { try? await http.shutdown() }
    }

    // MARK: Operations

    /// The object's bytes, or `nil` when it does not exist.
    ///
    /// - Parameters:
    ///   - key: the object key.
    ///   - retry: the retries of this request; the configuration's by default.
    public func get(key: String, retry: Configuration.RetryPolicy? = nil) async throws -> [UInt8]? {
        try await self.get(key: key, retry: retry, lastModified: nil)
    }

    /// ``get(key:retry:)``, also reporting the object's `Last-Modified` (milliseconds since 1970,
    /// S3's clock) to `lastModified`.
    package func get(
        key: String, retry: Configuration.RetryPolicy? = nil, lastModified: LastModifiedReport?
    ) async throws -> [UInt8]? {
        do {
            return try await self.collectedGet(key: key, retry: retry, lastModified: lastModified)
        } catch let error as S3Error where error.code == .preconditionFailed {
            // The object was replaced between two ranges: read the new one from the start, once.
            return try await self.collectedGet(key: key, retry: retry, lastModified: lastModified)
        }
    }

    /// Where a read reports its object's `Last-Modified`.
    package final class LastModifiedReport: Sendable {
        private let value = Mutex<Int64?>(nil)
        package init() {}
        /// Milliseconds since 1970 by S3's clock; `nil` when no object was read or it had no date.
        package var milliseconds: Int64? { self.value.withLock { $0 } }
        func record(_ header: String?) {
            guard let date = header.flatMap(S3Client.parseHTTPDate) else { return }
            self.value.withLock { $0 = Int64((date.timeIntervalSince1970 * 1_000).rounded()) }
        }
    }

    /// Copies an object onto itself (CopyObject, metadata replaced): its bytes and ETag stay, its
    /// `Last-Modified` becomes now, which is what garbage collection by last use and lifecycle
    /// rules go by.
    ///
    /// - Throws: ``S3Error``; a missing object is `http` 404 (`NoSuchKey`).
    package func touch(key: String, contentType: String = "application/octet-stream") async throws {
        let source = "/" + self.configuration.bucket + "/" + URIEncoding.encode(key, keepSlashes: true)
        _ = try await self.send(
            method: .PUT, key: key,
            headers: [
                ("x-amz-copy-source", source), ("x-amz-metadata-directive", "REPLACE"),
                ("content-type", contentType),
            ],
            acceptedStatuses: [200])
    }

    private func collectedGet(
        key: String, retry: Configuration.RetryPolicy?, lastModified: LastModifiedReport?
    ) async throws -> [UInt8]? {
        var object: [UInt8]?
        let found = try await self.rangedGet(key: key, retry: retry, lastModified: lastModified) { piece in
            if object == nil {
                object = piece
            } else {
                object! += piece
            }
        }
        return found ? (object ?? []) : nil
    }

    /// The object's bytes fed to `sink` in order, as its ranges arrive; `false` when it does not
    /// exist (nothing fed). Ranges are fetched ``Configuration/multipartConcurrency`` at a time; one
    /// that arrives early waits for those before it, so at most that many ranges are held, never
    /// the whole object.
    ///
    /// - Throws: ``S3Error`` (``S3Error/Code/preconditionFailed`` when the object was replaced
    ///   while it was read), or what `sink` throws.
    public func get(key: String, retry: Configuration.RetryPolicy? = nil, into sink: BlobSink) async throws -> Bool {
        try await self.rangedGet(key: key, retry: retry, lastModified: nil) { try sink.append($0) }
    }

    /// ``get(key:retry:into:)``, also reporting the object's `Last-Modified` to `lastModified`.
    package func get(
        key: String, retry: Configuration.RetryPolicy? = nil, into sink: BlobSink, lastModified: LastModifiedReport?
    ) async throws -> Bool {
        try await self.rangedGet(key: key, retry: retry, lastModified: lastModified) { try sink.append($0) }
    }

    /// A GET of the first part; when the object is longer, the other parts in parallel ranges,
    /// each fed to `consume` in order.
    private func rangedGet(
        key: String, retry: Configuration.RetryPolicy?, lastModified: LastModifiedReport?,
        consume: ([UInt8]) throws -> Void
    ) async throws -> Bool {
        let partSize = self.configuration.multipartPartSize
        let response = try await self.send(
            method: .GET, key: key, headers: [("range", "bytes=0-\(partSize - 1)")],
            acceptedStatuses: [200, 206, 404, 416], retry: retry)
        lastModified?.record(response.headers.first(name: "last-modified"))
        switch response.status {
        case 404:
            // A 404 about the bucket is an error, not a miss.
            if let code = response.s3Code, code != "NoSuchKey" { throw response.error(message: "GetObject failed") }
            return false
        case 416:
            // An empty object has no byte 0.
            let whole = try await self.send(method: .GET, key: key, acceptedStatuses: [200, 404], retry: retry)
            guard whole.status == 200 else { return false }
            try consume(whole.body)
            return true
        case 200:
            try consume(response.body)  // the server sent the whole object
            return true
        default:
            break
        }
        guard let total = Self.totalLength(contentRange: response.headers.first(name: "content-range")),
            total >= response.body.count
        else {
            throw S3Error(
                code: .invalidResponse, message: "a ranged GET answered without a valid Content-Range",
                httpStatus: response.status, requestID: response.requestID)
        }
        guard total <= self.configuration.maxResponseBytes else {
            throw S3Error(
                code: .invalidResponse,
                message: "the object is \(total) bytes, more than the \(self.configuration.maxResponseBytes) accepted",
                httpStatus: response.status, requestID: response.requestID)
        }
        guard response.body.count == min(partSize, total) else {
            throw S3Error(
                code: .invalidResponse, message: "the first range of the object is \(response.body.count) bytes",
                httpStatus: response.status, requestID: response.requestID)
        }
        try consume(response.body)
        if total == response.body.count { return true }
        let eTag = response.headers.first(name: "etag")
        let starts = Array(stride(from: partSize, to: total, by: partSize))
        try await withThrowingTaskGroup(of: (Int, [UInt8]).self) { group in
            var next = 0
            func startNext() {
                guard next < starts.count else { return }
                let index = next
                let start = starts[next]
                next += 1
                let end = min(start + partSize, total) - 1
                group.addTask {
                    var headers = [("range", "bytes=\(start)-\(end)")]
                    if let eTag { headers.append(("if-match", eTag)) }
                    let part = try await self.send(
                        method: .GET, key: key, headers: headers, acceptedStatuses: [206, 404, 412], retry: retry)
                    guard part.status == 206 else {
                        throw S3Error(
                            code: .preconditionFailed, message: "the object changed while it was read in ranges",
                            httpStatus: part.status, requestID: part.requestID)
                    }
                    guard part.body.count == end - start + 1,
                        Self.totalLength(contentRange: part.headers.first(name: "content-range")) == total
                    else {
                        throw S3Error(
                            code: .invalidResponse,
                            message: "the range \(start)-\(end) of the object came back as \(part.body.count) bytes",
                            httpStatus: part.status, requestID: part.requestID)
                    }
                    return (index, part.body)
                }
            }
            for _ in 0..<max(1, self.configuration.multipartConcurrency) { startNext() }
            // Ranges that arrived before their turn, by index.
            var early: [Int: [UInt8]] = [:]
            var due = 0
            while let (index, bytes) = try await group.next() {
                early[index] = bytes
                while let ready = early.removeValue(forKey: due) {
                    try consume(ready)
                    due += 1
                    startNext()
                }
            }
        }
        return true
    }

    /// The total of a `Content-Range: bytes a-b/total` header.
    package static func totalLength(contentRange: String?) -> Int? {
        guard let contentRange, let slash = contentRange.lastIndex(of: "/") else { return nil }
        return Int(contentRange[contentRange.index(after: slash)...])
    }

    /// Stores `body` under `key`; bodies of ``Configuration/multipartThreshold`` bytes or more go in parts.
    ///
    /// - Parameters:
    ///   - key: the object key.
    ///   - body: the object's bytes.
    ///   - contentType: always sent explicitly.
    ///   - ifNoneMatch: send `If-None-Match: *`, so that an existing object is kept; then an existing
    ///     object throws ``S3Error/Code/preconditionFailed``.
    public func put(
        key: String, body: [UInt8], contentType: String = "application/octet-stream", ifNoneMatch: Bool = false
    ) async throws {
        if body.count >= self.configuration.multipartThreshold {
            try await self.multipartPut(key: key, body: body, contentType: contentType, ifNoneMatch: ifNoneMatch)
            return
        }
        var headers: [(String, String)] = [("content-type", contentType)]
        if ifNoneMatch { headers.append(("if-none-match", "*")) }
        let response = try await self.send(
            method: .PUT, key: key, headers: headers, body: body, acceptedStatuses: [200, 412])
        if response.status == 412 {
            throw S3Error(
                code: .preconditionFailed, message: "an object already exists under the key", s3Code: response.s3Code,
                httpStatus: 412, requestID: response.requestID)
        }
    }

    /// The object's size and ETag, or `nil` when it does not exist.
    public func head(key: String) async throws -> ObjectInfo? {
        let response = try await self.send(method: .HEAD, key: key, acceptedStatuses: [200, 404])
        guard response.status == 200 else { return nil }
        return ObjectInfo(
            size: Int(response.headers.first(name: "content-length") ?? "") ?? 0,
            eTag: response.headers.first(name: "etag"))
    }

    /// Deletes the object; deleting a missing object succeeds.
    public func delete(key: String) async throws {
        _ = try await self.send(method: .DELETE, key: key, acceptedStatuses: [200, 204, 404])
    }

    /// Deletes `keys` with DeleteObjects, 1,000 per request.
    ///
    /// - Throws: ``S3Error`` naming the first key S3 could not delete.
    public func delete(keys: [String]) async throws {
        var start = 0
        while start < keys.count {
            let batch = keys[start..<min(start + 1_000, keys.count)]
            start += batch.count
            let body = Array(
                ("<Delete><Quiet>true</Quiet>"
                    + batch.map { "<Object><Key>\(S3XML.escape($0))</Key></Object>" }.joined() + "</Delete>").utf8
            )
            let md5 = Data(Insecure.MD5.hash(data: body)).base64EncodedString()
            let response = try await self.send(
                method: .POST,
                key: nil,
                query: [("delete", "")],
                headers: [("content-type", "application/xml"), ("content-md5", md5)],
                body: body,
                acceptedStatuses: [200]
            )
            let text = String(decoding: response.body, as: UTF8.self)
            if let failure = S3XML.blocks("Error", in: text).first {
                throw S3Error(
                    code: .http,
                    message: "DeleteObjects could not delete \(S3XML.value(of: "Key", in: failure) ?? "a key")",
                    s3Code: S3XML.value(of: "Code", in: failure),
                    httpStatus: response.status,
                    requestID: response.requestID
                )
            }
        }
    }

    /// One page of keys under `prefix` (ListObjectsV2), in lexicographic order.
    ///
    /// - Parameters:
    ///   - prefix: the keys' common prefix.
    ///   - startAfter: list only keys after this one.
    ///   - continuationToken: the previous page's ``ListPage/continuationToken``.
    ///   - maxKeys: at most this many keys (S3 caps it at 1,000).
    ///   - retry: the retries of this request; the configuration's by default.
    public func list(
        prefix: String, startAfter: String? = nil, continuationToken: String? = nil, maxKeys: Int = 1_000,
        retry: Configuration.RetryPolicy? = nil
    ) async throws -> ListPage {
        var query: [(String, String)] = [
            ("list-type", "2"), ("prefix", prefix), ("encoding-type", "url"), ("max-keys", "\(maxKeys)"),
        ]
        if let startAfter { query.append(("start-after", startAfter)) }
        if let continuationToken { query.append(("continuation-token", continuationToken)) }
        let response = try await self.send(method: .GET, key: nil, query: query, acceptedStatuses: [200], retry: retry)
        let text = String(decoding: response.body, as: UTF8.self)
        let contents = S3XML.blocks("Contents", in: text)
        let truncated = S3XML.value(of: "IsTruncated", in: text) == "true"
        return ListPage(
            keys: contents.compactMap {
                S3XML.value(of: "Key", in: $0).map { URIEncoding.decode($0, plusIsSpace: true) }
            },
            sizes: contents.map { Int(S3XML.value(of: "Size", in: $0) ?? "") ?? 0 },
            lastModifiedMilliseconds: contents.map {
                S3XML.value(of: "LastModified", in: $0).flatMap(Self.parseISO8601).map {
                    Int64(($0.timeIntervalSince1970 * 1_000).rounded())
                }
            },
            continuationToken: truncated ? S3XML.value(of: "NextContinuationToken", in: text) : nil
        )
    }

    /// Every key under `prefix`, following pagination.
    ///
    /// - Throws: ``S3Error/Code/invalidResponse`` when the server hands back a continuation token
    ///   it already gave (a loop that would never end).
    public func listAll(prefix: String) async throws -> [String] {
        var keys: [String] = []
        var token: String?
        var seen: Set<String> = []
        repeat {
            let page = try await self.list(prefix: prefix, continuationToken: token)
            keys += page.keys
            token = page.continuationToken
            if let token, !seen.insert(token).inserted {
                throw S3Error(code: .invalidResponse, message: "ListObjectsV2 repeated a continuation token")
            }
        } while token != nil
        return keys
    }

    /// Whether the bucket exists (HEAD bucket). A 403 means it exists but this identity may not
    /// list it, which least-privilege policies (get, put and delete objects only) often do.
    public func bucketExists() async throws -> Bool {
        let response = try await self.send(method: .HEAD, key: nil, acceptedStatuses: [200, 301, 403, 404])
        switch response.status {
        case 404: return false
        case 301: throw response.error(message: "the bucket is in another region")
        default: return true
        }
    }

    /// Creates the bucket (with a location constraint outside `us-east-1`); an existing bucket of
    /// ours is fine.
    public func createBucket() async throws {
        var body: [UInt8] = []
        if self.configuration.region != "us-east-1" {
            body = Array(
                "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>\(self.configuration.region)</LocationConstraint></CreateBucketConfiguration>"
                    .utf8
            )
        }
        let response = try await self.send(
            method: .PUT,
            key: nil,
            headers: body.isEmpty ? [] : [("content-type", "application/xml")],
            body: body,
            acceptedStatuses: [200, 409]
        )
        if response.status == 409, response.s3Code != "BucketAlreadyOwnedByYou" {
            throw response.error(message: "CreateBucket failed")
        }
    }

    // MARK: Multipart

    private func multipartPut(key: String, body: [UInt8], contentType: String, ifNoneMatch: Bool) async throws {
        let partSize = self.configuration.multipartPartSize
        var start = 0
        try await self.multipartPut(key: key, contentType: contentType, ifNoneMatch: ifNoneMatch) {
            guard start < body.count else { return nil }
            defer { start += partSize }
            return Array(body[start..<min(start + partSize, body.count)])
        }
    }

    /// Stores the object whose bytes `pieces` yields, `byteCount` in all, reading the pieces in
    /// order as parts are uploaded: at most ``Configuration/multipartConcurrency`` parts are held at
    /// once, never the whole object. Small objects are joined and sent in one PUT.
    public func put(
        key: String, byteCount: Int, pieces: BlobPieces, contentType: String = "application/octet-stream"
    ) async throws {
        guard byteCount >= self.configuration.multipartThreshold else {
            try await self.put(key: key, body: try await pieces.joined(byteCount: byteCount), contentType: contentType)
            return
        }
        let partSize = self.configuration.multipartPartSize
        var index = 0
        var carry: [UInt8] = []
        var total = 0
        try await self.multipartPut(key: key, contentType: contentType, ifNoneMatch: false) {
            var part = carry
            carry = []
            part.reserveCapacity(partSize)
            while part.count < partSize, index < pieces.count {
                let piece = try await pieces.piece(index)
                index += 1
                let room = partSize - part.count
                part += piece.prefix(room)
                if piece.count > room { carry = Array(piece.dropFirst(room)) }
            }
            total += part.count
            if part.isEmpty {
                guard total == byteCount else {
                    throw S3Error(
                        code: .invalidConfiguration,
                        message: "the pieces of the object add up to \(total) bytes, not the \(byteCount) announced")
                }
                return nil
            }
            return part
        }
    }

    /// A multipart upload of the parts `nextPart` yields in order (`nil` after the last), uploaded
    /// ``Configuration/multipartConcurrency`` at a time; aborted on failure.
    private func multipartPut(
        key: String, contentType: String, ifNoneMatch: Bool, nextPart: () async throws -> [UInt8]?
    ) async throws {
        let created = try await self.send(
            method: .POST,
            key: key,
            query: [("uploads", "")],
            headers: [("content-type", contentType)],
            acceptedStatuses: [200]
        )
        guard let uploadID = S3XML.value(of: "UploadId", in: String(decoding: created.body, as: UTF8.self)) else {
            throw S3Error(
                code: .invalidResponse, message: "CreateMultipartUpload returned no UploadId",
                httpStatus: created.status, requestID: created.requestID)
        }
        do {
            var parts: [(number: Int, eTag: String)] = []
            try await withThrowingTaskGroup(of: (Int, String).self) { group in
                var number = 0
                var running = 0
                while let body = try await nextPart() {
                    if running >= max(1, self.configuration.multipartConcurrency), let done = try await group.next() {
                        parts.append(done)
                        running -= 1
                    }
                    number += 1
                    let partNumber = number
                    group.addTask {
                        let part = try await self.send(
                            method: .PUT,
                            key: key,
                            query: [("partNumber", "\(partNumber)"), ("uploadId", uploadID)],
                            body: body,
                            acceptedStatuses: [200]
                        )
                        guard let eTag = part.headers.first(name: "etag") else {
                            throw S3Error(
                                code: .invalidResponse, message: "UploadPart returned no ETag", httpStatus: part.status,
                                requestID: part.requestID)
                        }
                        return (partNumber, eTag)
                    }
                    running += 1
                }
                while let done = try await group.next() { parts.append(done) }
            }
            parts.sort { $0.number < $1.number }
            let completion = Array(
                ("<CompleteMultipartUpload>"
                    + parts.map {
                        "<Part><PartNumber>\($0.number)</PartNumber><ETag>\(S3XML.escape($0.eTag))</ETag></Part>"
                    }.joined()
                    + "</CompleteMultipartUpload>").utf8
            )
            var headers: [(String, String)] = [("content-type", "application/xml")]
            if ifNoneMatch { headers.append(("if-none-match", "*")) }
            let completed = try await self.send(
                method: .POST,
                key: key,
                query: [("uploadId", uploadID)],
                headers: headers,
                body: completion,
                acceptedStatuses: [200, 412]
            )
            if completed.status == 412 {
                throw S3Error(
                    code: .preconditionFailed, message: "an object already exists under the key", httpStatus: 412,
                    requestID: completed.requestID)
            }
            // S3 may report a failure inside a 200 answer.
            let text = String(decoding: completed.body, as: UTF8.self)
            if text.contains("<Error>") {
                throw S3Error(
                    code: .http, message: "CompleteMultipartUpload failed", s3Code: S3XML.value(of: "Code", in: text),
                    httpStatus: completed.status, requestID: completed.requestID)
            }
        } catch {
            _ = try? await self.send(
                method: .DELETE, key: key, query: [("uploadId", uploadID)], acceptedStatuses: [200, 204, 404],
                retry: Configuration.RetryPolicy.none)
            throw error
        }
    }

    // MARK: Transport

    struct Response {
        var status: Int
        var headers: HTTPHeaders
        var body: [UInt8]
        var s3Code: String?
        var requestID: String? { self.headers.first(name: "x-amz-request-id") }

        func error(message: String) -> S3Error {
            let text = String(decoding: self.body, as: UTF8.self)
            return S3Error(
                code: .http,
                message: "\(message): \(S3XML.value(of: "Message", in: text) ?? "HTTP \(self.status)")",
                s3Code: self.s3Code,
                httpStatus: self.status,
                requestID: self.requestID ?? S3XML.value(of: "RequestId", in: text),
                retryAfter: self.headers.first(name: "retry-after").flatMap(Int.init).map { .seconds(max(0, $0)) }
            )
        }
    }

    /// Signs and sends one request, retrying as the policy says.
    func send(
        method: HTTPMethod,
        key: String?,
        query: [(String, String)] = [],
        headers: [(String, String)] = [],
        body: [UInt8] = [],
        acceptedStatuses: Set<Int>,
        retry: Configuration.RetryPolicy? = nil
    ) async throws -> Response {
        let policy = retry ?? self.configuration.retry
        var attempt = 1
        var correctedClock = false
        var refreshedCredentials = false
        var lastRetryCost: Int?
        while true {
            let response: Response
            do {
                let credentials = try await self.currentCredentials()
                do {
                    response = try await self.sendOnce(
                        method: method, key: key, query: query, headers: headers, body: body, credentials: credentials)
                } catch let error as S3Error {
                    self.countRequest(
                        method: method, key: key, query: query,
                        status: error.code == .transport ? "transport" : "invalid")
                    throw error
                }
                self.countRequest(method: method, key: key, query: query, status: "\(response.status)")
                if acceptedStatuses.contains(response.status) {
                    self.retryQuota.withLock { $0?.recordSuccess(lastRetryCost: lastRetryCost) }
                    return response
                }
            } catch let error as S3Error where error.isRetryable && attempt < policy.maxAttempts {
                guard let cost = self.spendRetry(after: error) else { throw error }
                lastRetryCost = cost
                try await self.pause(before: attempt, policy: policy, error: error)
                attempt += 1
                continue
            }
            let error = response.error(message: "\(method.rawValue) \(key.map { "object \($0)" } ?? "bucket") failed")
            // A skewed clock is corrected from the server's Date and retried once, whatever the policy.
            if error.s3Code == "RequestTimeTooSkewed", !correctedClock,
                let serverDate = response.headers.first(name: "date").flatMap(Self.parseHTTPDate)
            {
                let offset = Int64((serverDate.timeIntervalSinceNow * 1000).rounded())
                self.clockOffsetMilliseconds.store(offset, ordering: .relaxed)
                self.logger.warning(
                    "panza: S3 says the clock is skewed; signing with its time", metadata: ["offsetMs": "\(offset)"])
                correctedClock = true
                continue
            }
            // Temporary credentials that expired early (or were revoked) are fetched anew, once.
            if ["ExpiredToken", "TokenRefreshRequired", "InvalidToken"].contains(error.s3Code ?? ""),
                !refreshedCredentials
            {
                self.logger.info(
                    "panza: S3 says the credentials expired; fetching new ones",
                    metadata: ["s3Code": "\(error.s3Code ?? "")"])
                await self.credentialProvider.invalidate()
                refreshedCredentials = true
                continue
            }
            guard error.isRetryable, attempt < policy.maxAttempts else { throw error }
            if let retryAfter = error.retryAfter, retryAfter > self.configuration.maxRetryAfter { throw error }
            guard let cost = self.spendRetry(after: error) else { throw error }
            lastRetryCost = cost
            try await self.pause(before: attempt, policy: policy, error: error)
            attempt += 1
        }
    }

    /// Counts one request in `panza_s3_requests_total{operation, status}`.
    private func countRequest(method: HTTPMethod, key: String?, query: [(String, String)], status: String) {
        let operation = Self.operationName(method: method, key: key, query: query)
        let id = operation + "|" + status
        let counter = self.requestCounters.withLock { counters in
            if let counter = counters[id] { return counter }
            let made = Counter(
                label: "panza_s3_requests_total",
                dimensions: [("bucket", self.configuration.bucket), ("operation", operation), ("status", status)],
                factory: self.configuration.metricsFactory ?? MetricsSystem.factory
            )
            counters[id] = made
            return made
        }
        counter.increment()
    }

    /// The S3 API name of a request.
    static func operationName(method: HTTPMethod, key: String?, query: [(String, String)]) -> String {
        let names = Set(query.map(\.0))
        switch (method, key != nil) {
        case (.GET, true): return "GetObject"
        case (.GET, false): return "ListObjectsV2"
        case (.PUT, true): return names.contains("partNumber") ? "UploadPart" : "PutObject"
        case (.PUT, false): return "CreateBucket"
        case (.HEAD, true): return "HeadObject"
        case (.HEAD, false): return "HeadBucket"
        case (.DELETE, true): return names.contains("uploadId") ? "AbortMultipartUpload" : "DeleteObject"
        case (.POST, false): return "DeleteObjects"
        case (.POST, true): return names.contains("uploads") ? "CreateMultipartUpload" : "CompleteMultipartUpload"
        default: return method.rawValue
        }
    }

    /// Takes a retry's cost from the budget; `nil` (and a log line) when it is spent.
    private func spendRetry(after error: S3Error) -> Int? {
        let cost: Int?? = self.retryQuota.withLock { quota -> Int?? in
            guard quota != nil else { return .none }
            return .some(quota!.acquire(after: error))
        }
        guard let cost else { return 0 }  // no budget configured
        guard let cost else {
            self.logger.warning(
                "panza: S3 retry budget spent; failing without retry until requests succeed again",
                metadata: ["error": "\(error)"])
            return nil
        }
        return cost
    }

    /// The provider's credentials; its failures are ``S3Error``s.
    private func currentCredentials() async throws -> S3Credentials {
        do {
            return try await self.credentialProvider.credentials()
        } catch let error as S3Error {
            throw error
        } catch {
            throw S3Error(code: .missingCredentials, message: "the credential provider failed", underlying: "\(error)")
        }
    }

    /// Backoff with full jitter, or the server's `Retry-After` when it is longer.
    private func pause(before attempt: Int, policy: Configuration.RetryPolicy, error: S3Error) async throws {
        let cap = min(policy.maxDelay, policy.baseDelay * (1 << min(attempt - 1, 20)))
        let delay = max(cap * Double.random(in: 0...1), error.retryAfter ?? .zero)
        self.logger.debug(
            "panza: retrying S3 request", metadata: ["attempt": "\(attempt)", "error": "\(error)", "delay": "\(delay)"])
        try await Task.sleep(for: delay)
    }

    /// Parses S3's `2026-11-27T03:04:05.000Z` (with or without fractional seconds).
    static func parseISO8601(_ text: String) -> Date? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions =
            text.contains(".") ? [.withInternetDateTime, .withFractionalSeconds] : [.withInternetDateTime]
        return formatter.date(from: text)
    }

    /// Every key under `prefix` after `startAfter`, with each object's size and date, following
    /// pagination.
    ///
    /// - Throws: ``S3Error/Code/invalidResponse`` when the server repeats a continuation token.
    package func listAllObjects(
        prefix: String, startAfter: String? = nil, retry: Configuration.RetryPolicy? = nil
    ) async throws -> [ListedObject] {
        var objects: [ListedObject] = []
        var token: String?
        var seen: Set<String> = []
        repeat {
            let page = try await self.list(
                prefix: prefix, startAfter: token == nil ? startAfter : nil, continuationToken: token, retry: retry)
            for (index, key) in page.keys.enumerated() {
                objects.append(
                    ListedObject(
                        key: key, size: index < page.sizes.count ? page.sizes[index] : 0,
                        lastModifiedMilliseconds: index < page.lastModifiedMilliseconds.count
                            ? page.lastModifiedMilliseconds[index] : nil))
            }
            token = page.continuationToken
            if let token, !seen.insert(token).inserted {
                throw S3Error(code: .invalidResponse, message: "ListObjectsV2 repeated a continuation token")
            }
        } while token != nil
        return objects
    }

    /// One object of ``listAllObjects(prefix:startAfter:)``.
    package struct ListedObject: Hashable, Sendable {
        package var key: String
        package var size: Int
        /// By S3's clock, in milliseconds since 1970.
        package var lastModifiedMilliseconds: Int64?
    }

    static func parseHTTPDate(_ text: String) -> Date? {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        return formatter.date(from: text)
    }

    private func sendOnce(
        method: HTTPMethod,
        key: String?,
        query: [(String, String)],
        headers: [(String, String)],
        body: [UInt8],
        credentials: S3Credentials
    ) async throws -> Response {
        var headers = headers
        if let owner = self.configuration.expectedBucketOwner { headers.append(("x-amz-expected-bucket-owner", owner)) }
        let path = self.pathPrefix + "/" + (key ?? "")
        let payloadHash: String =
            body.isEmpty
            ? SigV4Signer.emptyPayloadHash
            : (self.configuration.signsPayload || self.scheme == "http"
                ? SigV4Signer.hex(SHA256.hash(data: body)) : SigV4Signer.unsignedPayload)
        let signable = SigV4Signer.Request(
            method: method.rawValue,
            host: self.hostHeader,
            path: path,
            query: query.map { (name: $0.0, value: $0.1) },
            headers: headers.map { (name: $0.0, value: $0.1) },
            payloadHash: payloadHash
        )
        let now = Date().addingTimeInterval(Double(self.clockOffsetMilliseconds.load(ordering: .relaxed)) / 1000)
        var signer = SigV4Signer(credentials: credentials, region: self.configuration.region)
        signer.keyCache = self.signingKeys
        let signed = signer.signedHeaders(for: signable, date: now)
        var url = self.baseURL + URIEncoding.encode(path, keepSlashes: true)
        if !query.isEmpty {
            url += "?" + query.map { "\(URIEncoding.encode($0.0))=\(URIEncoding.encode($0.1))" }.joined(separator: "&")
        }
        var request = HTTPClientRequest(url: url)
        request.method = method
        request.headers.add(name: "host", value: self.hostHeader)
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        for (name, value) in signed { request.headers.add(name: name, value: value) }
        if !body.isEmpty || method == .PUT || method == .POST {
            request.body = .bytes(body)
        }
        return try await self.exchange(request, method: method, key: key, timeout: self.configuration.requestTimeout)
    }

    /// Sends `request` and reads its answer, bounded in size and in time: AsyncHTTPClient's
    /// deadline covers connect and headers; the body is read against the same deadline (checked
    /// at each piece, so that a server dripping its answer is cut off) and the idle read timeout
    /// (a body that stops altogether). No task is spawned per request.
    private func exchange(_ request: HTTPClientRequest, method: HTTPMethod, key: String?, timeout: Duration)
        async throws -> Response
    {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        let response: HTTPClientResponse
        do {
            response = try await self.http.execute(request, deadline: .now() + .nanoseconds(timeout.wholeNanoseconds))
        } catch {
            throw S3Error(
                code: .transport, message: "\(method.rawValue) to \(self.baseURL) got no answer", underlying: "\(error)"
            )
        }
        // Bytes from the server are not trusted: an object body is bounded by maxResponseBytes, any
        // other body by 16 MiB; the announced length is checked before reading.
        let isObjectBody = method == .GET && key != nil && response.status.code < 300
        let limit = isObjectBody ? self.configuration.maxResponseBytes : 16 << 20
        if let announced = response.headers.first(name: "content-length").flatMap(Int.init), announced > limit {
            throw S3Error(
                code: .invalidResponse,
                message:
                    "the answer of \(method.rawValue) announces \(announced) bytes, more than the \(limit) accepted",
                httpStatus: Int(response.status.code)
            )
        }
        var bytes: [UInt8] = []
        if let announced = response.headers.first(name: "content-length").flatMap(Int.init) {
            bytes.reserveCapacity(announced)
        }
        do {
            for try await piece in response.body {
                guard bytes.count + piece.readableBytes <= limit else {
                    throw S3Error(
                        code: .invalidResponse,
                        message: "the answer of \(method.rawValue) is longer than the \(limit) bytes accepted",
                        httpStatus: Int(response.status.code)
                    )
                }
                bytes.append(contentsOf: piece.readableBytesView)
                guard clock.now <= deadline else {
                    throw S3Error(
                        code: .transport,
                        message: "the answer of \(method.rawValue) took longer than \(timeout) to arrive",
                        httpStatus: Int(response.status.code)
                    )
                }
            }
        } catch let error as S3Error {
            throw error
        } catch {
            throw S3Error(
                code: .transport, message: "reading the answer of \(method.rawValue) failed",
                httpStatus: Int(response.status.code), underlying: "\(error)")
        }
        var s3Code: String?
        if response.status.code >= 300 {
            s3Code = S3XML.value(of: "Code", in: String(decoding: bytes, as: UTF8.self))
            if s3Code == nil, response.status.code == 404, method == .HEAD || method == .GET { s3Code = "NoSuchKey" }
        }
        return Response(status: Int(response.status.code), headers: response.headers, body: bytes, s3Code: s3Code)
    }

    /// S3's bucket naming rules, the parts that matter for URLs: 3 to 63 lowercase letters, digits,
    /// dots and hyphens, starting and ending with a letter or digit.
    static func isValidBucketName(_ name: String) -> Bool {
        guard (3...63).contains(name.count) else { return false }
        let allowed = name.allSatisfy { ($0.isASCII && ($0.isLowercase || $0.isNumber)) || $0 == "." || $0 == "-" }
        guard allowed, let first = name.first, let last = name.last else { return false }
        return (first.isLowercase || first.isNumber) && (last.isLowercase || last.isNumber)
    }
}
