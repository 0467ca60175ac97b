import Foundation
import Testing

@testable import Panza

/// The child processes the package starts itself (Foundation's `Process.run()` crashes now and
/// then on Linux): arguments, environment, streams, exit status, signals, and what the child
/// inherits.
@Suite(.timeLimit(.minutes(1)))
struct SpawnedProcessTests {
    @Test("Arguments, exactly the given environment, and the exit status reach the parent")
    func argumentsEnvironmentAndStatus() throws {
        let child = try SpawnedProcess(
            executable: "/bin/sh",
            arguments: ["-c", #"printf '%s|%s|%s' "$1" "$PANZA_X" "${HOME-unset}"; exit 7"#, "sh", "one two"],
            environment: ["PANZA_X": "x=y"])
        let output = String(decoding: child.standardOutput!.readDataToEndOfFile(), as: UTF8.self)
        #expect(output == "one two|x=y|unset")
        #expect(child.waitUntilExit() == .exited(7))
        #expect(child.waitUntilExit() == .exited(7), "a second wait gives the same answer")
        #expect(!child.isRunning)
    }

    @Test("Standard input and error are pipes when asked; /dev/null by default for input")
    func streams() throws {
        let echo = try SpawnedProcess(
            executable: "/bin/sh", arguments: ["-c", "cat; echo oops >&2"], environment: [:], standardInput: .pipe)
        echo.standardInput!.write(Data("hello\n".utf8))
        try echo.standardInput!.close()
        #expect(String(decoding: echo.standardOutput!.readDataToEndOfFile(), as: UTF8.self) == "hello\n")
        #expect(String(decoding: echo.standardError!.readDataToEndOfFile(), as: UTF8.self) == "oops\n")
        #expect(echo.waitUntilExit() == .exited(0))

        let reader = try SpawnedProcess(executable: "/bin/sh", arguments: ["-c", "cat"], environment: [:])
        #expect(reader.standardInput == nil)
        #expect(reader.standardOutput!.readDataToEndOfFile().isEmpty, "stdin is /dev/null: cat ends at once")
        #expect(reader.waitUntilExit() == .exited(0))
    }

    @Test("A signal ends the child, and the wait says which")
    func signalled() async throws {
        let child = try SpawnedProcess(executable: "/bin/sleep", arguments: ["30"], environment: [:])
        #expect(child.isRunning)
        child.send(signal: SIGKILL)
        #expect(await child.exit() == .signalled(SIGKILL))
        child.send(signal: SIGKILL)  // after the reaping: nothing is sent
    }

    @Test("A missing executable is an error, not a child")
    func missingExecutable() {
        #expect(throws: POSIXError.self) {
            _ = try SpawnedProcess(executable: "/nonexistent/panza-no-such-program", arguments: [], environment: [:])
        }
    }

    @Test("The child inherits its three standard streams and no other descriptor")
    func noInheritedDescriptors() throws {
        // A descriptor open in this process without close-on-exec.
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("spawn-\(UUID()).txt").path
        let fd = open(path, O_CREAT | O_RDWR, 0o600)
        try #require(fd > 2)
        defer {
            close(fd)
            unlink(path)
        }
        let child = try SpawnedProcess(
            executable: "/bin/sh", arguments: ["-c", "ls /proc/self/fd"], environment: [:])
        let listed = String(decoding: child.standardOutput!.readDataToEndOfFile(), as: UTF8.self)
            .split(separator: "\n").compactMap { Int($0) }
        #expect(child.waitUntilExit() == .exited(0))
        // `ls` opens one descriptor of its own to list the directory.
        #expect(!listed.contains(Int(fd)), "descriptors: \(listed)")
        #expect(listed.filter { $0 > 2 }.count <= 1, "descriptors: \(listed)")
    }
}
