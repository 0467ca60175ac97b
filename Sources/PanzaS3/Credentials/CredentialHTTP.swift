import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// The few HTTP requests of credential sources (STS, the container endpoint, instance metadata),
/// each with a total deadline and a bounded answer.
struct CredentialHTTP: Sendable {
    struct Response: Sendable {
        var status: Int
        var body: [UInt8]
        var text: String { String(decoding: self.body, as: UTF8.self) }
    }

    let client: HTTPClient
    /// The longest one request may take, connect, headers and body included.
    var timeout: Duration

    func send(
        _ method: HTTPMethod,
        _ url: String,
        headers: [(String, String)] = [],
        body: [UInt8]? = nil,
        timeout: Duration? = nil
    ) async throws -> Response {
        var request = HTTPClientRequest(url: url)
        request.method = method
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(body) }
        let limit = 1 << 20
        let client = self.client
        let prepared = request
        return try await RequestDeadline.run(
            within: timeout ?? self.timeout, what: "\(method.rawValue) \(Self.redactedURL(url))"
        ) {
            let response: HTTPClientResponse
            do {
                response = try await client.execute(prepared, timeout: .seconds(60))
            } catch {
                throw S3Error(
                    code: .transport, message: "\(method.rawValue) \(Self.redactedURL(url)) got no answer",
                    underlying: "\(error)")
            }
            do {
                let buffer = try await response.body.collect(upTo: limit)
                return Response(status: Int(response.status.code), body: Array(buffer.readableBytesView))
            } catch {
                throw S3Error(
                    code: .invalidResponse, message: "the answer of \(Self.redactedURL(url)) could not be read",
                    underlying: "\(error)")
            }
        }
    }

    /// The URL without its query (a web identity token may travel there).
    static func redactedURL(_ url: String) -> String {
        url.split(separator: "?", maxSplits: 1).first.map(String.init) ?? url
    }
}
