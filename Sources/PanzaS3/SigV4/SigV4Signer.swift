import Crypto
public import Foundation

/// AWS Signature Version 4, header authentication.
///
/// ```swift
/// let signer = SigV4Signer(credentials: credentials, region: "us-east-1", service: "s3")
/// var request = SigV4Signer.Request(method: "GET", host: "bucket.s3.amazonaws.com", path: "/key")
/// let headers = signer.signedHeaders(for: request, date: Date())   // add these to the request
/// ```
///
/// For S3 (``normalizesPath`` false, the default for service `s3`) paths are encoded once and not
/// normalized, and the payload hash travels in `x-amz-content-sha256`; for other services paths
/// are normalized as RFC 3986 says. Verified against the AWS test suite and the S3 documentation's
/// examples (`Tests/PanzaS3Tests/SigV4VectorTests.swift`).
public struct SigV4Signer: Sendable {
    /// The hash of an empty payload.
    public static let emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    /// The payload hash that leaves the body unsigned (S3 only).
    public static let unsignedPayload = "UNSIGNED-PAYLOAD"

    /// What is signed: the request as it will be sent.
    public struct Request: Sendable {
        /// `GET`, `PUT`, ...
        public var method: String
        /// The `Host` header value (with the port when it is not the scheme's default).
        public var host: String
        /// The path, not percent-encoded (an S3 key may contain any character).
        public var path: String
        /// Query parameters, not percent-encoded; a parameter without a value has `""`.
        public var query: [(name: String, value: String)]
        /// Headers to sign besides `host` and the `x-amz-*` ones the signer adds.
        public var headers: [(name: String, value: String)]
        /// The hex SHA-256 of the body, or ``SigV4Signer/unsignedPayload``.
        public var payloadHash: String

        /// A request to sign, as it will be sent.
        public init(
            method: String,
            host: String,
            path: String,
            query: [(name: String, value: String)] = [],
            headers: [(name: String, value: String)] = [],
            payloadHash: String = SigV4Signer.emptyPayloadHash
        ) {
            self.method = method
            self.host = host
            self.path = path
            self.query = query
            self.headers = headers
            self.payloadHash = payloadHash
        }
    }

    /// The credentials that sign.
    public var credentials: S3Credentials
    /// The region of the signing scope.
    public var region: String
    /// The service of the signing scope (`s3`, `sts`).
    public var service: String
    /// Whether to remove `.`/`..` segments and repeated slashes from paths (never for S3).
    public var normalizesPath: Bool
    /// Whether to send and sign `x-amz-content-sha256` (S3 requires it).
    public var sendsPayloadHashHeader: Bool
    /// Keeps the day's signing key between requests (four HMACs saved per request).
    var keyCache: SigningKeyCache?

    /// A signer for `service` in `region` with `credentials`.
    public init(credentials: S3Credentials, region: String, service: String = "s3") {
        self.credentials = credentials
        self.region = region
        self.service = service
        self.normalizesPath = service != "s3"
        self.sendsPayloadHashHeader = service == "s3"
    }

    /// The headers to add to `request`: `x-amz-date`, `x-amz-content-sha256` (S3),
    /// `x-amz-security-token` (with a session token) and `authorization`.
    public func signedHeaders(for request: Request, date: Date) -> [(name: String, value: String)] {
        let stamp = SigV4Timestamp(date)
        var added: [(name: String, value: String)] = [("x-amz-date", stamp.dateTime)]
        if self.sendsPayloadHashHeader { added.append(("x-amz-content-sha256", request.payloadHash)) }
        if let token = self.credentials.sessionToken { added.append(("x-amz-security-token", token)) }
        var signed = request
        signed.headers += added
        let authorization = self.authorization(for: signed, timestamp: stamp)
        return added + [("authorization", authorization)]
    }

    /// The `Authorization` header value for a request that already carries its `x-amz-*` headers.
    public func authorization(for request: Request, date: Date) -> String {
        self.authorization(for: request, timestamp: SigV4Timestamp(date))
    }

    /// Task 1: the canonical request, and the signed header names.
    package func canonicalRequest(for request: Request) -> (text: String, signedHeaders: String) {
        var path = request.path.isEmpty ? "/" : request.path
        if self.normalizesPath { path = Self.normalize(path) }
        let canonicalPath = URIEncoding.encode(path, keepSlashes: true)

        var encodedQuery: [(name: String, value: String)] = []
        for parameter in request.query {
            encodedQuery.append((URIEncoding.encode(parameter.name), URIEncoding.encode(parameter.value)))
        }
        encodedQuery.sort { lhs, rhs in lhs.name == rhs.name ? lhs.value < rhs.value : lhs.name < rhs.name }
        let canonicalQuery = encodedQuery.map { parameter in parameter.name + "=" + parameter.value }.joined(
            separator: "&")

        var headers: [String: [String]] = ["host": [request.host]]
        var order: [String] = ["host"]
        for (name, value) in request.headers {
            let lowered = name.lowercased()
            if lowered == "host" { continue }
            if headers[lowered] == nil { order.append(lowered) }
            headers[lowered, default: []].append(Self.trimmed(value))
        }
        let names = order.sorted()
        let canonicalHeaders = names.map { "\($0):\(headers[$0]!.joined(separator: ","))\n" }.joined()
        let signedHeaders = names.joined(separator: ";")
        let parts: [String] = [
            request.method, canonicalPath, canonicalQuery, canonicalHeaders, signedHeaders, request.payloadHash,
        ]
        let text = parts.joined(separator: "\n")
        return (text, signedHeaders)
    }

    /// Task 2: the string to sign.
    package func stringToSign(canonicalRequest: String, date: Date) -> String {
        self.stringToSign(canonicalRequest: canonicalRequest, timestamp: SigV4Timestamp(date))
    }

    // MARK: Internals

    func stringToSign(canonicalRequest: String, timestamp: SigV4Timestamp) -> String {
        let hash = Self.hex(SHA256.hash(data: Array(canonicalRequest.utf8)))
        return "AWS4-HMAC-SHA256\n\(timestamp.dateTime)\n\(self.scope(timestamp))\n\(hash)"
    }

    func authorization(for request: Request, timestamp: SigV4Timestamp) -> String {
        let (canonical, signedHeaders) = self.canonicalRequest(for: request)
        let stringToSign = self.stringToSign(canonicalRequest: canonical, timestamp: timestamp)
        let signature = Self.hex(
            HMAC<SHA256>.authenticationCode(for: Array(stringToSign.utf8), using: self.signingKey(timestamp)))
        return "AWS4-HMAC-SHA256 Credential=\(self.credentials.accessKeyID)/\(self.scope(timestamp)), "
            + "SignedHeaders=\(signedHeaders), Signature=\(signature)"
    }

    private func scope(_ timestamp: SigV4Timestamp) -> String {
        "\(timestamp.date)/\(self.region)/\(self.service)/aws4_request"
    }

    /// Task 3: the signing key, `HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")`.
    func signingKey(_ timestamp: SigV4Timestamp) -> SymmetricKey {
        let scope = SigningKeyCache.Scope(
            date: timestamp.date, region: self.region, service: self.service,
            secret: self.credentials.secretAccessKey
        )
        if let cached = self.keyCache?.key(for: scope) { return cached }
        var key = SymmetricKey(data: Array(("AWS4" + self.credentials.secretAccessKey).utf8))
        for part in [timestamp.date, self.region, self.service, "aws4_request"] {
            key = SymmetricKey(data: HMAC<SHA256>.authenticationCode(for: Array(part.utf8), using: key))
        }
        self.keyCache?.store(key, for: scope)
        return key
    }

    /// Trims a header value and folds runs of whitespace (line breaks included) into one space.
    static func trimmed(_ value: String) -> String {
        value.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }).joined(separator: " ")
    }

    /// RFC 3986 section 5.2.4 dot-segment removal, plus collapsing repeated slashes.
    static func normalize(_ path: String) -> String {
        var output: [Substring] = []
        for segment in path.split(separator: "/", omittingEmptySubsequences: true) {
            switch segment {
            case ".": continue
            case "..": _ = output.popLast()
            default: output.append(segment)
            }
        }
        let trailingSlash = path.hasSuffix("/") && !output.isEmpty
        return "/" + output.joined(separator: "/") + (trailingSlash ? "/" : "")
    }

    static func hex(_ bytes: some Sequence<UInt8>) -> String {
        let digits: [UInt8] = Array("0123456789abcdef".utf8)
        var output: [UInt8] = []
        for byte in bytes {
            output.append(digits[Int(byte >> 4)])
            output.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: output, as: UTF8.self)
    }
}

/// The two time formats of a signature, in UTC.
struct SigV4Timestamp {
    /// `20150830T123600Z`
    let dateTime: String
    /// `20150830`
    let date: String

    init(_ date: Date) {
        let seconds = Int64(date.timeIntervalSince1970.rounded(.down))
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let secondOfDay = seconds - days * 86_400
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1_460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        func pad(_ value: Int64, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        self.date = pad(year, 4) + pad(month, 2) + pad(day, 2)
        self.dateTime =
            self.date + "T" + pad(secondOfDay / 3600, 2) + pad(secondOfDay / 60 % 60, 2) + pad(secondOfDay % 60, 2)
            + "Z"
    }
}
