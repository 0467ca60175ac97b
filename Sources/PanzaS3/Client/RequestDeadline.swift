/// A total deadline on one request: connect, headers and the whole body.
///
/// AsyncHTTPClient's own deadline ends once headers arrive, so a server that drips its body would
/// hold a caller forever; this one covers the body too and cancels the request when it passes.
enum RequestDeadline {
    static func run<Value: Sendable>(
        within duration: Duration,
        what: @autoclosure () -> String,
        _ body: @escaping @Sendable () async throws -> Value
    ) async throws -> Value {
        let description = what()
        return try await withThrowingTaskGroup(of: Value.self) { group in
            group.addTask { try await body() }
            group.addTask {
                try await Task.sleep(for: duration)
                throw S3Error(code: .transport, message: "\(description) took longer than \(duration)")
            }
            defer { group.cancelAll() }
            guard let first = try await group.next() else { throw CancellationError() }
            return first
        }
    }
}
