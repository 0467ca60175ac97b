import CPanzaSystem
package import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A child process started with `posix_spawn`, for the package's own use: the S3 tier's
/// `credential_process`, the command-line tool and the tests.
///
/// Foundation's `Process.run()` on Linux (Swift 6.3) reads `/proc/self/fd` with a copy of each
/// directory entry's whole 256-byte name, past the end of the entry, and crashes when that runs
/// into an unmapped page (swift-corelibs-foundation pull request 5472, which reports it in about
/// one run in five of a test suite that starts children; it crashed one run of Panza's). This type
/// spawns directly; the child
/// inherits its three standard streams and nothing else (`posix_spawn_file_actions_addclosefrom_np`).
package final class SpawnedProcess: Sendable {
    /// What a standard stream of the child is connected to.
    package enum Stream: Sendable {
        /// A pipe whose other end the parent holds (``standardInput``, ``standardOutput``,
        /// ``standardError``).
        case pipe
        /// `/dev/null`.
        case null
        /// The parent's own stream.
        case inherit
    }

    /// How the child ended.
    package enum Termination: Sendable, Equatable {
        case exited(Int32)
        case signalled(Int32)

        /// The exit status, or the signal's number for a child a signal ended.
        package var status: Int32 {
            switch self {
            case .exited(let status), .signalled(let status): status
            }
        }
    }

    package let processIdentifier: Int32
    /// The writing end of the child's standard input, when it is a pipe.
    package let standardInput: FileHandle?
    /// The reading end of the child's standard output, when it is a pipe.
    package let standardOutput: FileHandle?
    /// The reading end of the child's standard error, when it is a pipe.
    package let standardError: FileHandle?
    private let termination = Mutex<Termination?>(nil)
    /// Serializes `waitpid`: the child is reaped once.
    private let reaping = Mutex<Void>(())

    /// Starts `executable` with `arguments` (without the program name) and exactly `environment`.
    ///
    /// - Throws: `POSIXError` when the pipes or the child cannot be made (for example, no such
    ///   executable).
    package init(
        executable: String,
        arguments: [String],
        environment: [String: String],
        standardInput input: Stream = .null,
        standardOutput output: Stream = .pipe,
        standardError error: Stream = .pipe
    ) throws {
        var actions = posix_spawn_file_actions_t()
        try Self.check(posix_spawn_file_actions_init(&actions))
        defer { posix_spawn_file_actions_destroy(&actions) }
        var attributes = posix_spawnattr_t()
        try Self.check(posix_spawnattr_init(&attributes))
        defer { posix_spawnattr_destroy(&attributes) }

        // The child starts with default signal handling and nothing blocked, whatever this
        // process set (the Swift runtime ignores SIGPIPE, which a child would inherit).
        var defaults = sigset_t()
        sigemptyset(&defaults)
        sigaddset(&defaults, SIGPIPE)
        var empty = sigset_t()
        sigemptyset(&empty)
        try Self.check(posix_spawnattr_setsigdefault(&attributes, &defaults))
        try Self.check(posix_spawnattr_setsigmask(&attributes, &empty))
        try Self.check(posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK)))

        // Each pipe: (parent's end, child's end). Both ends are close-on-exec (children spawned
        // elsewhere must not inherit them); the child's copy on its standard descriptor is not.
        var parentEnds: [Int32?] = [nil, nil, nil]
        var childEnds: [Int32] = []
        defer { for fd in childEnds { close(fd) } }
        do {
            for (index, stream) in [input, output, error].enumerated() {
                let target = Int32(index)
                switch stream {
                case .inherit:
                    continue
                case .null:
                    try Self.check(
                        posix_spawn_file_actions_addopen(
                            &actions, target, "/dev/null", index == 0 ? O_RDONLY : O_WRONLY, 0))
                case .pipe:
                    var fds: [Int32] = [-1, -1]
                    guard pipe(&fds) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
                    _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
                    _ = fcntl(fds[1], F_SETFD, FD_CLOEXEC)
                    // Standard input: the child reads fds[0]; the others: the child writes fds[1].
                    let (parent, child) = index == 0 ? (fds[1], fds[0]) : (fds[0], fds[1])
                    parentEnds[index] = parent
                    childEnds.append(child)
                    try Self.check(posix_spawn_file_actions_adddup2(&actions, child, target))
                }
            }
            try Self.check(cpanza_spawn_close_from(&actions, 3))

            let argv = ([executable] + arguments).map { strdup($0) }
            let envp = environment.sorted { $0.key < $1.key }.map { strdup("\($0.key)=\($0.value)") }
            defer { for pointer in argv + envp { free(pointer) } }
            var pid = pid_t()
            try Self.check(posix_spawn(&pid, executable, &actions, &attributes, argv + [nil], envp + [nil]))
            self.processIdentifier = pid
        } catch {
            for fd in parentEnds.compactMap({ $0 }) { close(fd) }
            throw error
        }
        self.standardInput = parentEnds[0].map { FileHandle(fileDescriptor: $0, closeOnDealloc: true) }
        self.standardOutput = parentEnds[1].map { FileHandle(fileDescriptor: $0, closeOnDealloc: true) }
        self.standardError = parentEnds[2].map { FileHandle(fileDescriptor: $0, closeOnDealloc: true) }
    }

    /// Sends `signal` to the child (nothing once it was reaped). It does not wait for the reaping
    /// lock, which ``waitUntilExit()`` holds until the child ends.
    package func send(signal: Int32) {
        guard self.termination.withLock({ $0 }) == nil else { return }
        _ = kill(self.processIdentifier, signal)
    }

    /// Blocks until the child ends, and reaps it; later calls return the same answer.
    package func waitUntilExit() -> Termination {
        self.reaping.withLock { _ in
            if let known = self.termination.withLock({ $0 }) { return known }
            var status: Int32 = 0
            while waitpid(self.processIdentifier, &status, 0) == -1, errno == EINTR {}
            // The macros of <sys/wait.h> are not imported: bits 0–6 are the signal, 8–15 the status.
            let signal = status & 0x7F
            let ended: Termination = signal == 0 ? .exited((status >> 8) & 0xFF) : .signalled(signal)
            self.termination.withLock { $0 = ended }
            return ended
        }
    }

    /// Whether the child was not yet reaped (by ``waitUntilExit()``).
    package var isRunning: Bool { self.termination.withLock { $0 } == nil }

    /// Waits for the child's end on a thread of its own (a blocking wait must not hold a thread of
    /// the cooperative pool).
    package func exit() async -> Termination {
        await withCheckedContinuation { continuation in
            Thread { continuation.resume(returning: self.waitUntilExit()) }.start()
        }
    }

    private static func check(_ result: Int32) throws {
        guard result == 0 else { throw POSIXError(POSIXErrorCode(rawValue: result) ?? .EIO) }
    }
}
