import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A TCP listener on 127.0.0.1 that accepts connections and never answers, as a dead load
/// balancer or a dropped route does: the worst endpoint a client can meet.
public final class BlackholeServer: @unchecked Sendable {
    /// The port it listens on.
    public let port: UInt16
    private let listener: Int32
    private let lock = NSLock()
    private var connections: [Int32] = []
    private var isClosed = false

    public init() throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard listener >= 0 else { throw POSIXError(.EMFILE) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(listener, 128) == 0 else {
            Glibc.close(listener)
            throw POSIXError(.EADDRINUSE)
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) }
        }
        self.listener = listener
        self.port = UInt16(bigEndian: address.sin_port)
        let thread = Thread { [self] in
            while true {
                let connection = accept(listener, nil, nil)
                guard connection >= 0 else { return }  // closed
                self.lock.withLock {
                    if self.isClosed { Glibc.close(connection) } else { self.connections.append(connection) }
                }
            }
        }
        thread.start()
    }

    /// Stops listening and drops every connection.
    public func close() {
        let connections = self.lock.withLock {
            self.isClosed = true
            defer { self.connections = [] }
            return self.connections
        }
        shutdown(self.listener, Int32(SHUT_RDWR))
        Glibc.close(self.listener)
        for connection in connections { Glibc.close(connection) }
    }

    deinit { self.close() }
}
