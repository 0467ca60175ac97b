public import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A TCP proxy on 127.0.0.1 in front of a real server, that injects the faults of a bad network
/// or a bad S3: no answer at all, slow answers, answers that drip, reset connections, and error
/// answers on a schedule.
///
/// Changing the fault drops every open connection (as a failing load balancer does), so that the
/// client's pooled connections meet the new fault at once.
public final class FaultProxy: @unchecked Sendable {
    /// What the proxy does to the connections it accepts.
    public enum Fault: Sendable, Equatable {
        /// Forwards bytes both ways.
        case none
        /// Accepts connections and reads requests, and never answers.
        case blackhole
        /// Accepts connections and resets them (RST) at once.
        case reset
        /// Forwards, holding every chunk of the server's answer for this long first.
        case delay(Duration)
        /// Forwards the server's answer `bytes` bytes at a time, one piece per `interval`.
        case drip(bytes: Int, interval: Duration)
        /// Answers the next `count` requests itself with an S3 error (`status`, S3 code `code`),
        /// one request per connection, then forwards again.
        case answer(status: Int, code: String, count: Int)
    }

    public let port: UInt16
    private let upstreamPort: UInt16
    private let listener: Int32
    private let lock = NSLock()
    private var fault = Fault.none
    /// Open descriptors; one leaves this set under the lock as it is closed, so that a shutdown
    /// (also under the lock) never reaches a descriptor number reused by someone else.
    private var connections: Set<Int32> = []
    private var answered = 0
    private var accepted = 0
    private var isClosed = false

    /// A proxy to `127.0.0.1:upstreamPort`.
    public init(upstreamPort: UInt16) throws {
        self.upstreamPort = upstreamPort
        let (listener, port) = try LoopbackSocket.listen()
        self.listener = listener
        self.port = port
        Thread { [self] in
            while true {
                let connection = accept(listener, nil, nil)
                guard connection >= 0 else { return }
                let fault: Fault? = self.lock.withLock {
                    if self.isClosed { return nil }
                    self.accepted += 1
                    self.connections.insert(connection)
                    return self.fault
                }
                guard let fault else {
                    Glibc.close(connection)
                    return
                }
                Thread { self.serve(connection, fault: fault) }.start()
            }
        }.start()
    }

    /// A proxy to the port of `endpoint` (`http://127.0.0.1:PORT`).
    public convenience init(upstream endpoint: String) throws {
        guard let port = URLComponents(string: endpoint)?.port else { throw POSIXError(.EINVAL) }
        try self.init(upstreamPort: UInt16(port))
    }

    /// The endpoint URL of the proxy, `http://127.0.0.1:PORT`.
    public var endpoint: String { "http://127.0.0.1:\(self.port)" }

    /// Requests the proxy answered itself under ``Fault/answer(status:code:count:)``.
    public var answeredCount: Int { self.lock.withLock { self.answered } }

    /// Connections accepted so far.
    public var acceptedCount: Int { self.lock.withLock { self.accepted } }

    /// Sets the fault for new connections and drops the open ones.
    public func inject(_ fault: Fault) {
        self.lock.withLock {
            self.fault = fault
            for connection in self.connections { shutdown(connection, Int32(SHUT_RDWR)) }
        }
    }

    /// Closes a descriptor of this proxy.
    private func release(_ connection: Int32) {
        self.lock.withLock {
            self.connections.remove(connection)
            Glibc.close(connection)
        }
    }

    /// The fault now in force.
    public var currentFault: Fault { self.lock.withLock { self.fault } }

    /// Stops listening and drops every connection.
    public func close() {
        let closing: Bool = self.lock.withLock {
            guard !self.isClosed else { return false }
            self.isClosed = true
            for connection in self.connections { shutdown(connection, Int32(SHUT_RDWR)) }
            return true
        }
        guard closing else { return }
        shutdown(self.listener, Int32(SHUT_RDWR))
        Glibc.close(self.listener)
    }

    deinit { self.close() }

    // MARK: Connections

    private func serve(_ client: Int32, fault: Fault) {
        switch fault {
        case .none, .delay, .drip:
            self.forward(client, fault: fault)
        case .blackhole:
            var sink = [UInt8](repeating: 0, count: 65_536)
            while read(client, &sink, sink.count) > 0 {}
            self.release(client)
        case .reset:
            var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
            setsockopt(client, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
            self.release(client)
        case .answer(let status, let code, _):
            self.answer(client, status: status, code: code)
        }
    }

    private func answer(_ client: Int32, status: Int, code: String) {
        defer { self.release(client) }
        guard Self.readRequest(client) else { return }
        let body =
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>\(code)</Code><Message>injected by FaultProxy</Message><RequestId>fault</RequestId></Error>"
        var response =
            "HTTP/1.1 \(status) Injected\r\nContent-Type: application/xml\r\nContent-Length: \(body.utf8.count)\r\n"
        response += "Connection: close\r\nDate: \(Self.httpDate())\r\n\r\n\(body)"
        Self.writeAll(client, Array(response.utf8))
        self.lock.withLock {
            self.answered += 1
            if case .answer(let status, let code, let count) = self.fault {
                self.fault = count <= 1 ? .none : .answer(status: status, code: code, count: count - 1)
            }
        }
    }

    private func forward(_ client: Int32, fault: Fault) {
        let upstream = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = LoopbackSocket.address(port: self.upstreamPort)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(upstream, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard upstream >= 0, connected == 0 else {
            if upstream >= 0 { Glibc.close(upstream) }
            self.release(client)
            return
        }
        self.lock.withLock { _ = self.connections.insert(upstream) }
        let pair = SocketPair(client: client, upstream: upstream, release: { [self] in self.release($0) })
        Thread {
            Self.pump(from: client, to: upstream, fault: .none)
            pair.finish()
        }.start()
        Self.pump(from: upstream, to: client, fault: fault)
        pair.finish()
    }

    /// Copies bytes until either side ends, applying `fault` to each chunk.
    private static func pump(from source: Int32, to destination: Int32, fault: Fault) {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = read(source, &buffer, buffer.count)
            guard count > 0 else { return }
            let chunk = Array(buffer[0..<count])
            switch fault {
            case .delay(let duration):
                Thread.sleep(forTimeInterval: Self.seconds(duration))
                guard self.writeAll(destination, chunk) else { return }
            case .drip(let bytes, let interval):
                var offset = 0
                while offset < chunk.count {
                    let end = min(offset + max(1, bytes), chunk.count)
                    guard self.writeAll(destination, Array(chunk[offset..<end])) else { return }
                    offset = end
                    Thread.sleep(forTimeInterval: Self.seconds(interval))
                }
            default:
                guard self.writeAll(destination, chunk) else { return }
            }
        }
    }

    /// Reads one request head and its `Content-Length` body; `false` if the connection ended first.
    private static func readRequest(_ connection: Int32) -> Bool {
        var buffer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        let marker = Array("\r\n\r\n".utf8)
        while true {
            if let end = buffer.firstRange(of: marker)?.lowerBound {
                let head = String(decoding: buffer[0..<end], as: UTF8.self).lowercased()
                let length =
                    head.components(separatedBy: "\r\n").first { $0.hasPrefix("content-length:") }
                    .flatMap { Int($0.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) } ?? 0
                while buffer.count < end + 4 + length {
                    let count = read(connection, &chunk, chunk.count)
                    guard count > 0 else { return false }
                    buffer += chunk[0..<count]
                }
                return true
            }
            let count = read(connection, &chunk, chunk.count)
            guard count > 0 else { return false }
            buffer += chunk[0..<count]
        }
    }

    @discardableResult
    private static func writeAll(_ connection: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes {
                send(connection, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
            }
            guard written > 0 else { return false }
            offset += written
        }
        return true
    }

    private static func seconds(_ duration: Duration) -> TimeInterval {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    private static func httpDate() -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        return formatter.string(from: Date())
    }

    /// The two sockets of a forwarded connection: the first pump to end shuts both down, the
    /// second closes them, so that no descriptor is closed while the other pump still reads it.
    private final class SocketPair: @unchecked Sendable {
        let client: Int32
        let upstream: Int32
        private let release: (Int32) -> Void
        private let lock = NSLock()
        private var ended = 0

        init(client: Int32, upstream: Int32, release: @escaping (Int32) -> Void) {
            self.client = client
            self.upstream = upstream
            self.release = release
        }

        func finish() {
            let last = self.lock.withLock {
                self.ended += 1
                return self.ended == 2
            }
            if last {
                self.release(self.client)
                self.release(self.upstream)
            } else {
                shutdown(self.client, Int32(SHUT_RDWR))
                shutdown(self.upstream, Int32(SHUT_RDWR))
            }
        }
    }
}
