/// An error of the S3 client or tier.
///
/// It carries what S3 said (``s3Code``, ``httpStatus``, ``requestID``) and never a secret: no
/// credentials, no signature, no request body.
public struct S3Error: Error, Hashable, Sendable, CustomStringConvertible {
    /// What went wrong, in a form fit for `switch` and `==`.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Value: Hashable, Sendable {
            case http
            case transport
            case missingCredentials
            case invalidConfiguration
            case invalidResponse
            case preconditionFailed
        }

        private let value: Value
        private init(_ value: Value) { self.value = value }

        /// S3 answered with an error status; see ``S3Error/s3Code`` and ``S3Error/httpStatus``.
        public static let http = Code(.http)
        /// The request did not get an answer: connection refused or reset, timeout.
        public static let transport = Code(.transport)
        /// No credentials were found.
        public static let missingCredentials = Code(.missingCredentials)
        /// A setting is invalid (bucket name, endpoint URL, ...).
        public static let invalidConfiguration = Code(.invalidConfiguration)
        /// S3 answered with something the client cannot read.
        public static let invalidResponse = Code(.invalidResponse)
        /// A conditional request's condition failed (`If-None-Match: *` on an existing key).
        public static let preconditionFailed = Code(.preconditionFailed)

        /// `S3Error.code: message`, with S3's code, the HTTP status and the request id; never a secret.
        public var description: String { "\(self.value)" }
    }

    /// What went wrong.
    public let code: Code
    /// One line for people: what failed and why.
    public let message: String
    /// The S3 error code, such as `NoSuchBucket` or `SlowDown`.
    public let s3Code: String?
    /// The HTTP status of S3's answer.
    public let httpStatus: Int?
    /// S3's request id, for support requests.
    public let requestID: String?
    /// What caused this error (a transport error), if anything.
    public let underlying: String?
    /// How long the server asked the client to wait (`Retry-After`), if it did.
    public var retryAfter: Duration?

    /// An error with `code` and a one-line `message`, and what S3 said when it answered.
    public init(
        code: Code,
        message: String,
        s3Code: String? = nil,
        httpStatus: Int? = nil,
        requestID: String? = nil,
        underlying: String? = nil,
        retryAfter: Duration? = nil
    ) {
        self.retryAfter = retryAfter
        self.code = code
        self.message = message
        self.s3Code = s3Code
        self.httpStatus = httpStatus
        self.requestID = requestID
        self.underlying = underlying
    }

    /// `S3Error.code: message`, with S3's code, the HTTP status and the request id; never a secret.
    public var description: String {
        var text = "S3Error.\(self.code): \(self.message)"
        if let s3Code { text += " (S3 code \(s3Code))" }
        if let httpStatus { text += " (HTTP \(httpStatus))" }
        if let requestID { text += " (request id \(requestID))" }
        if let underlying { text += " (\(underlying))" }
        return text
    }

    /// Whether sending the request again may succeed.
    public var isRetryable: Bool {
        if self.code == .transport { return true }
        guard self.code == .http else { return false }
        if let status = self.httpStatus, status >= 500 || status == 429 { return true }
        return ["SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "RequestTimeTooSkewed"]
            .contains(self.s3Code ?? "")
    }
}
