import Crypto
import Foundation
import Testing

@testable import PanzaS3

/// The AWS Signature Version 4 test suite (`Fixtures/sigv4/`, from botocore, Apache-2.0: see its
/// `PROVENANCE.md`, `LICENSE` and `NOTICE`) and the worked examples of the S3 documentation
/// (`Fixtures/sigv4-s3/`).
struct SigV4VectorTests {
    /// The package's `Fixtures` folder.
    static let vectorsRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures")

    /// Every case folder of the generic suite: a folder holding `<name>.req`.
    static let suiteCases: [String] = {
        let root = vectorsRoot.appendingPathComponent("sigv4")
        let enumerator = FileManager.default.enumerator(atPath: root.path)
        var cases: [String] = []
        while let path = enumerator?.nextObject() as? String {
            if path.hasSuffix(".req") { cases.append((path as NSString).deletingLastPathComponent) }
        }
        return cases.sorted()
    }()

    @Test("The suite is where the tests expect it, with all 34 cases")
    func suitePresent() {
        #expect(Self.suiteCases.count == 34, "found \(Self.suiteCases.count) cases under \(Self.vectorsRoot.path)")
    }

    /// A parsed `.req` file.
    struct ParsedRequest {
        var method: String
        var path: String
        var query: [(name: String, value: String)]
        var headers: [(name: String, value: String)]
        var body: [UInt8]
    }

    static func parse(_ text: String) -> ParsedRequest {
        var lines = text.components(separatedBy: "\n")
        let requestLine = lines.removeFirst()
        let method = String(requestLine.prefix { $0 != " " })
        let target = String(requestLine.dropFirst(method.count + 1).dropLast(" HTTP/1.1".count))
        let pathPart = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let path = URIEncoding.decode(String(pathPart[0]))
        var query: [(name: String, value: String)] = []
        if pathPart.count == 2 {
            for pair in pathPart[1].split(separator: "&") {
                let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                query.append(
                    (URIEncoding.decode(String(parts[0])), parts.count == 2 ? URIEncoding.decode(String(parts[1])) : "")
                )
            }
        }
        var headers: [(name: String, value: String)] = []
        var bodyLines: [String] = []
        var inBody = false
        for line in lines {
            if inBody {
                bodyLines.append(line)
            } else if line.isEmpty {
                inBody = true
            } else if line.first == " " || line.first == "\t", !headers.isEmpty {
                headers[headers.count - 1].value += "\n" + line  // a continuation line
            } else if let colon = line.firstIndex(of: ":") {
                headers.append((String(line[..<colon]), String(line[line.index(after: colon)...])))
            }
        }
        return ParsedRequest(
            method: method, path: path, query: query, headers: headers,
            body: Array(bodyLines.joined(separator: "\n").utf8))
    }

    static func read(_ folder: String, _ suffix: String) throws -> String {
        let name = (folder as NSString).lastPathComponent
        return try String(
            contentsOf: vectorsRoot.appendingPathComponent("sigv4/\(folder)/\(name).\(suffix)"), encoding: .utf8)
    }

    @Test("Canonical request, string to sign and authorization match the AWS suite", arguments: suiteCases)
    func awsSuite(folder: String) throws {
        var parsed = Self.parse(try Self.read(folder, "req"))
        // This case's request leaves the session token for the signer to add (see PROVENANCE.md).
        let sessionToken: String? =
            folder == "get-vanilla-with-session-token"
            ? "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267" : nil
        if let sessionToken { parsed.headers.append(("X-Amz-Security-Token", sessionToken)) }
        var signer = SigV4Signer(
            credentials: S3Credentials(
                accessKeyID: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                sessionToken: sessionToken),
            region: "us-east-1",
            service: "service"
        )
        signer.normalizesPath = true
        let host = parsed.headers.first { $0.name.lowercased() == "host" }?.value ?? ""
        let request = SigV4Signer.Request(
            method: parsed.method,
            host: host,
            path: parsed.path,
            query: parsed.query,
            headers: parsed.headers.filter { $0.name.lowercased() != "host" },
            payloadHash: SigV4Signer.hex(SHA256.hash(data: parsed.body))
        )
        let date = Date(timeIntervalSince1970: 1_440_938_160)  // 20150830T123600Z
        let canonical = signer.canonicalRequest(for: request)
        #expect(canonical.text == (try Self.read(folder, "creq")))
        #expect(signer.stringToSign(canonicalRequest: canonical.text, date: date) == (try Self.read(folder, "sts")))
        #expect(signer.authorization(for: request, date: date) == (try Self.read(folder, "authz")))
    }

    struct S3Example: Decodable, Sendable, CustomTestStringConvertible {
        var name: String
        var method: String
        var host: String
        var path: String
        var query: String
        var headers: [String: String]
        var body: String?
        var payload: String?
        // swift-format-ignore: AlwaysUseLowerCamelCase
        var expected_signature: String  // the fixture's field name
        // swift-format-ignore: AlwaysUseLowerCamelCase
        var canonical_request: String  // the fixture's field name
        // swift-format-ignore: AlwaysUseLowerCamelCase
        var string_to_sign: String  // the fixture's field name
        var testDescription: String { self.name }
    }

    struct S3Examples: Decodable {
        // swift-format-ignore: AlwaysUseLowerCamelCase
        var access_key: String  // the fixture's field name
        // swift-format-ignore: AlwaysUseLowerCamelCase
        var secret_key: String  // the fixture's field name
        var cases: [S3Example]
    }

    /// `nil` when the file is missing, which ``examplesPresent()`` reports as a failure.
    static let documentExamples: S3Examples? = {
        guard let data = try? Data(contentsOf: vectorsRoot.appendingPathComponent("sigv4-s3/s3-doc-examples.json"))
        else { return nil }
        return try? JSONDecoder().decode(S3Examples.self, from: data)
    }()

    /// The header-authenticated examples (the presigned and streaming ones sign differently).
    static let headerExamples = (documentExamples?.cases ?? []).filter {
        !$0.name.hasPrefix("Presigned") && !$0.name.hasPrefix("Streaming")
    }

    @Test("The S3 documentation examples are where the tests expect them")
    func examplesPresent() {
        #expect(Self.documentExamples != nil, "no readable \(Self.vectorsRoot.path)/sigv4-s3/s3-doc-examples.json")
        #expect(Self.headerExamples.count == 4)
    }

    @Test("S3 documentation examples: no path normalization, x-amz-content-sha256 signed", arguments: headerExamples)
    func s3Examples(example: S3Example) throws {
        let signer = SigV4Signer(
            credentials: S3Credentials(
                accessKeyID: Self.documentExamples!.access_key, secretAccessKey: Self.documentExamples!.secret_key),
            region: "us-east-1",
            service: "s3"
        )
        let query: [(name: String, value: String)] =
            example.query.isEmpty
            ? []
            : example.query.split(separator: "&").map { pair in
                let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                return (String(parts[0]), parts.count == 2 ? String(parts[1]) : "")
            }
        let request = SigV4Signer.Request(
            method: example.method,
            host: example.host,
            path: example.path,
            query: query,
            headers: example.headers.map { ($0.key, $0.value) },
            payloadHash: example.headers["x-amz-content-sha256"]!
        )
        let canonical = signer.canonicalRequest(for: request)
        #expect(canonical.text == example.canonical_request)
        let date = Date(timeIntervalSince1970: 1_369_353_600)  // 20130524T000000Z
        #expect(signer.stringToSign(canonicalRequest: canonical.text, date: date) == example.string_to_sign)
        #expect(signer.authorization(for: request, date: date).hasSuffix("Signature=\(example.expected_signature)"))
    }

    @Test("The signed headers of a request carry the payload hash, the session token, and no secret")
    func signedHeaders() {
        let signer = SigV4Signer(
            credentials: S3Credentials(accessKeyID: "AKID", secretAccessKey: "SECRET-VALUE", sessionToken: "TOKEN"),
            region: "eu-west-1"
        )
        let headers = signer.signedHeaders(
            for: .init(method: "GET", host: "h", path: "/k"), date: Date(timeIntervalSince1970: 0))
        let names = headers.map(\.name)
        #expect(names == ["x-amz-date", "x-amz-content-sha256", "x-amz-security-token", "authorization"])
        #expect(headers[0].value == "19700101T000000Z")
        let authorization = headers[3].value
        #expect(authorization.contains("Credential=AKID/19700101/eu-west-1/s3/aws4_request"))
        #expect(authorization.contains("SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token"))
        #expect(!authorization.contains("SECRET"))
        #expect(!"\(signer.credentials)".contains("SECRET") && !"\(signer.credentials)".contains("TOKEN"))
    }

    @Test(
        "Timestamps are UTC calendar dates",
        arguments: [
            (0.0, "19700101T000000Z"), (951_782_400.0, "20000229T000000Z"), (1_440_938_160.0, "20150830T123600Z"),
            (4_102_444_799.0, "20991231T235959Z"),
        ])
    func timestamps(seconds: Double, expected: String) {
        #expect(SigV4Timestamp(Date(timeIntervalSince1970: seconds)).dateTime == expected)
    }

    @Test("A cached signing key signs exactly as a fresh one, and a new secret or day is derived anew")
    func signingKeyCache() {
        let request = SigV4Signer.Request(method: "GET", host: "b.s3.amazonaws.com", path: "/k")
        let date = Date(timeIntervalSince1970: 1_700_000_000)
        let cache = SigningKeyCache()
        for (secret, day) in [("one", 0.0), ("one", 0.0), ("two", 0.0), ("two", 86_400.0)] {
            let credentials = S3Credentials(accessKeyID: "AKID", secretAccessKey: secret)
            var cached = SigV4Signer(credentials: credentials, region: "us-east-1")
            cached.keyCache = cache
            let fresh = SigV4Signer(credentials: credentials, region: "us-east-1")
            let when = date.addingTimeInterval(day)
            #expect(
                cached.signedHeaders(for: request, date: when).map(\.value)
                    == fresh.signedHeaders(for: request, date: when).map(\.value),
                "secret \(secret), day +\(day)"
            )
        }
    }
}
