import Foundation
import Testing

@testable import Panza

struct AccessTraceTests {
    let directory: TemporaryDirectory

    init() throws {
        self.directory = try TemporaryDirectory()
    }

    @Test("A traced cache records who served each access, with hashed keys and sizes")
    func recording() async throws {
        let path = self.directory.path("accesses.pnzt")
        let trace = try AccessTrace(path: path)
        let cache = try await makeCache(in: self.directory) { $0.trace = trace }
        _ = try await cache.value(forKey: "a") { "alpha" }  // loader
        _ = try await cache.value(forKey: "a") { "alpha" }  // memory
        _ = try await cache.value(forKey: "missing", as: String.self)  // miss
        try await cache.close()

        let reopened = try await makeCache(in: self.directory, memory: nil) {
            $0.trace = try? AccessTrace(path: path + "2")
        }
        _ = try await reopened.value(forKey: "a", as: String.self)  // SQLite
        try await reopened.close()

        let records = try AccessTrace.read(path: path)
        #expect(records.map(\.source) == [.loader, .memory, .miss])
        #expect(records[0].keyHash == records[1].keyHash)
        #expect(records[0].keyHash != records[2].keyHash)
        #expect(records[0].size > 0 && records[0].size == records[1].size)
        #expect(records[0].time <= records[1].time)
        #expect(try AccessTrace.read(path: path + "2").map(\.source) == [.tier(0)])
    }

    @Test("A file that is not a trace is refused")
    func foreignFile() throws {
        let path = self.directory.path("not-a-trace")
        try Data("hello world, not a trace".utf8).write(to: URL(fileURLWithPath: path))
        let error = try #require(throws: PanzaError.self) { try AccessTrace.read(path: path) }
        #expect(error.code == .unsupportedFormat)
    }
}
