import Foundation
import PanzaTestSupport
import Testing

/// Large memoized values through memory, SQLite and S3, each step in its own process (issue 9):
/// written once, then read back by a new process from SQLite, and by another with an empty SQLite
/// file from S3. Every byte is checked; the loader must not run again.
@Suite(.timeLimit(.minutes(10)), .serialized)
struct LargeValueTests {
    let directory: TemporaryDirectory

    init() throws {
        self.directory = try TemporaryDirectory()
    }

    /// Runs the worker's `large` command; returns its peak resident set.
    func run(_ database: String, _ mode: String, megabytes: Int, bucket: String) async throws -> Int {
        let settings = try S3TestServer.settings()
        let result = try await ChildProcess.run([
            "large", self.directory.path(database), mode, "\(megabytes)", "7", settings.endpoint, bucket,
        ])
        #expect(result.status == 0, "\(mode) from \(database) failed: \(result.error)")
        let words = result.output.split(separator: " ")
        #expect(words.first == "ok", "\(result.output) \(result.error)")
        #expect(words.dropFirst().first == (mode == "write" ? "1" : "0"), "loader calls: \(result.output)")
        return Int(words.last?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? -1
    }

    @Test("40 MiB and 300 MiB values round-trip through SQLite and S3 in separate processes", arguments: [40, 300])
    func roundTrip(megabytes: Int) async throws {
        let bucket = S3TestServer.uniqueBucket()
        let written = try await self.run("writer.sqlite", "write", megabytes: megabytes, bucket: bucket)
        let fromSQLite = try await self.run("writer.sqlite", "read", megabytes: megabytes, bucket: bucket)
        let fromS3 = try await self.run("reader.sqlite", "read", megabytes: megabytes, bucket: bucket)
        // Peak memory stays near the value's own size when SQLite is written or read (the value,
        // one frame, the runtime, and SQLite's memory-mapped pages), and within the value plus
        // its stored form when S3 is read (the object is filled into SQLite whole).
        let value = megabytes << 20
        for (step, peak, copies) in [
            ("write", written, 2), ("read from SQLite", fromSQLite, 2), ("read from S3", fromS3, 3),
        ] {
            #expect(peak > 0)
            #expect(
                peak < copies * value + (192 << 20), "\(step): peak RSS \(peak >> 20) MiB for a \(megabytes) MiB value")
        }
        print(
            "large value \(megabytes) MiB: peak RSS write \(written >> 20) MiB, read SQLite \(fromSQLite >> 20) MiB, read S3 \(fromS3 >> 20) MiB"
        )
    }
}
