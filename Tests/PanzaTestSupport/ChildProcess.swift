public import Foundation

/// Runs `PanzaTestWorker` (the helper program built beside the test bundle), or another program
/// such as `panza`, as a real process.
public struct ChildProcess {
    public let process: Process
    let output: Pipe
    let error: Pipe
    let input: Pipe

    /// The worker binary: it sits in the same build folder as the test bundle.
    public static var workerURL: URL {
        let testBinary = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        return testBinary.deletingLastPathComponent().appendingPathComponent("PanzaTestWorker")
    }

    /// Starts `executable` (the worker by default) with `arguments`, in this process's environment
    /// without the variables that change Panza's behaviour, plus `environment`.
    public static func start(
        _ arguments: [String],
        executable: URL = workerURL,
        environment: [String: String] = [:]
    ) throws -> ChildProcess {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        var merged = ProcessInfo.processInfo.environment
        for name in ["BUST_CACHE", "CACHE_ONLY", "PRINT_CACHE_MISSES", "PANZA_S3_BUCKET"] { merged[name] = nil }
        merged.merge(environment) { $1 }
        process.environment = merged
        let output = Pipe()
        let error = Pipe()
        let input = Pipe()
        process.standardOutput = output
        process.standardError = error
        process.standardInput = input
        try process.run()
        return ChildProcess(process: process, output: output, error: error, input: input)
    }

    /// Runs the worker to completion; returns its exit status, standard output and standard error.
    public static func run(_ arguments: [String], environment: [String: String] = [:]) async throws -> (
        status: Int32, output: String, error: String
    ) {
        let child = try start(arguments, environment: environment)
        return try await child.wait()
    }

    public func wait() async throws -> (status: Int32, output: String, error: String) {
        let output = self.output
        let error = self.error
        let process = self.process
        return await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                let out = output.fileHandleForReading.readDataToEndOfFile()
                let err = error.fileHandleForReading.readDataToEndOfFile()
                process.waitUntilExit()
                continuation.resume(
                    returning: (
                        process.terminationStatus,
                        String(decoding: out, as: UTF8.self),
                        String(decoding: err, as: UTF8.self)
                    ))
            }
        }
    }

    /// Reads standard output until a line equal to `line` arrives (or the output ends).
    public func waitForLine(_ line: String) async -> Bool {
        await self.waitForLine { $0 == line } != nil
    }

    /// Reads standard output until a line starting with `prefix` arrives; returns that line, or
    /// `nil` when the output ends first.
    public func waitForLine(startingWith prefix: String) async -> String? {
        await self.waitForLine { $0.hasPrefix(prefix) }
    }

    private func waitForLine(where matches: @escaping @Sendable (Substring) -> Bool) async -> String? {
        let handle = self.output.fileHandleForReading
        return await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                var buffer = ""
                while true {
                    let data = handle.availableData
                    if data.isEmpty {
                        continuation.resume(returning: nil)
                        return
                    }
                    buffer += String(decoding: data, as: UTF8.self)
                    // The last piece may be an unfinished line.
                    let lines = buffer.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
                    if let line = lines.first(where: matches) {
                        continuation.resume(returning: String(line))
                        return
                    }
                }
            }
        }
    }

    /// Writes `line` and a newline to the child's standard input.
    public func send(line: String) {
        self.input.fileHandleForWriting.write(Data((line + "\n").utf8))
    }

    /// Sends `line` and returns the next answer line, which starts with `= ` (without it); `nil`
    /// when the child's output ends first.
    public func ask(_ line: String) async -> String? {
        self.send(line: line)
        return await self.waitForLine(startingWith: "= ").map { String($0.dropFirst(2)) }
    }

    /// Sends `signal` and returns at once (``wait()`` collects the end).
    public func send(signal: Int32) {
        _ = Foundation.kill(self.process.processIdentifier, signal)
    }

    public func kill(signal: Int32) {
        Foundation.kill(self.process.processIdentifier, signal)
        self.process.waitUntilExit()
    }
}
