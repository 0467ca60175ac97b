public import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A TCP server on 127.0.0.1 for fault-injection tests: it reads each HTTP request and answers as
/// the test says, or never answers at all, as a dead load balancer or a dropped route does.
public final class LoopbackHTTPServer: @unchecked Sendable {
    /// One request as received.
    public struct Request: Sendable {
        public var method: String
        public var target: String
        public var headers: [String: String]
        /// The body, as sent (by `Content-Length`).
        public var body: [UInt8] = []
        /// The body as text.
        public var text: String { String(decoding: self.body, as: UTF8.self) }
        /// When the request arrived.
        public var receivedAt = Date()
    }

    /// An HTTP response with `status`, `headers` and `body`, closing the connection.
    public static func response(status: Int, headers: [String: String] = [:], body: String = "") -> String {
        var response = "HTTP/1.1 \(status) Canned\r\nConnection: close\r\n"
        if headers.keys.contains(where: { $0.lowercased() == "content-length" }) == false {
            response += "Content-Length: \(body.utf8.count)\r\n"
        }
        for (name, value) in headers { response += "\(name): \(value)\r\n" }
        return response + "\r\n" + body
    }

    /// What to answer: the whole HTTP response, or `nil` to hold the connection without answering.
    public typealias Responder = @Sendable (Request) -> String?

    /// The port it listens on.
    public let port: UInt16
    private let listener: Int32
    private let lock = NSLock()
    private var connections: [Int32] = []
    private var received: [Request] = []
    private var isClosed = false

    /// A server that accepts connections and never answers.
    public static func blackhole() throws -> LoopbackHTTPServer {
        try LoopbackHTTPServer { _ in nil }
    }

    /// A server that answers every request with `status`, `headers` and `body`, then closes.
    public static func canned(status: Int, headers: [String: String] = [:], body: String = "") throws
        -> LoopbackHTTPServer
    {
        try LoopbackHTTPServer { _ in Self.response(status: status, headers: headers, body: body) }
    }

    public init(respond: @escaping Responder) throws {
        let (listener, port) = try LoopbackSocket.listen(backlog: 128)
        self.listener = listener
        self.port = port
        Thread { [self] in
            while true {
                let connection = accept(listener, nil, nil)
                guard connection >= 0 else { return }  // closed
                let keep = self.lock.withLock {
                    if self.isClosed { return false }
                    self.connections.append(connection)
                    return true
                }
                guard keep else {
                    Glibc.close(connection)
                    return
                }
                Thread { self.serve(connection, respond: respond) }.start()
            }
        }.start()
    }

    /// The requests received so far.
    public var requests: [Request] { self.lock.withLock { self.received } }

    /// The endpoint URL, `http://127.0.0.1:PORT`.
    public var endpoint: String { "http://127.0.0.1:\(self.port)" }

    private func serve(_ connection: Int32, respond: Responder) {
        var buffer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            // The head of one request, then its body (by Content-Length).
            let marker = Array("\r\n\r\n".utf8)
            var headEnd: Int?
            while headEnd == nil {
                if let range = Self.find(marker, in: buffer) {
                    headEnd = range
                    break
                }
                let count = read(connection, &chunk, chunk.count)
                guard count > 0 else { return }
                buffer += chunk[0..<count]
            }
            guard let end = headEnd else { return }
            let head = String(decoding: buffer[0..<end], as: UTF8.self)
            var lines = head.components(separatedBy: "\r\n")
            let requestLine = lines.removeFirst().split(separator: " ")
            var headers: [String: String] = [:]
            for line in lines {
                guard let colon = line.firstIndex(of: ":") else { continue }
                headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(
                    in: .whitespaces)
            }
            let bodyLength = Int(headers["content-length"] ?? "") ?? 0
            while buffer.count < end + 4 + bodyLength {
                let count = read(connection, &chunk, chunk.count)
                guard count > 0 else { return }
                buffer += chunk[0..<count]
            }
            let body = Array(buffer[(end + 4)..<(end + 4 + bodyLength)])
            buffer.removeFirst(end + 4 + bodyLength)
            let request = Request(
                method: requestLine.first.map(String.init) ?? "",
                target: requestLine.dropFirst().first.map(String.init) ?? "",
                headers: headers,
                body: body
            )
            self.lock.withLock { self.received.append(request) }
            guard let response = respond(request) else { continue }  // hold it, never answer
            let bytes = Array(response.utf8)
            _ = bytes.withUnsafeBytes { write(connection, $0.baseAddress, $0.count) }
            shutdown(connection, Int32(SHUT_WR))
            return
        }
    }

    private static func find(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        for start in 0...(haystack.count - needle.count)
        where haystack[start..<(start + needle.count)].elementsEqual(needle) {
            return start
        }
        return nil
    }

    /// Stops listening and drops every connection.
    public func close() {
        let connections: [Int32]? = self.lock.withLock {
            guard !self.isClosed else { return nil }
            self.isClosed = true
            defer { self.connections = [] }
            return self.connections
        }
        guard let connections else { return }
        shutdown(self.listener, Int32(SHUT_RDWR))
        Glibc.close(self.listener)
        for connection in connections { Glibc.close(connection) }
    }

    deinit { self.close() }
}
