import Foundation
import Logging
import Synchronization
import Testing

@testable import PanzaS3

/// When cached credentials are served, refreshed in the background, or waited for, on an injected
/// clock.
@Suite(.timeLimit(.minutes(1)))
struct CredentialCacheTests {
    /// A clock the test moves, and a loader that counts its calls and can be told to fail.
    final class ManualClock: Sendable {
        let time = Mutex(Date(timeIntervalSince1970: 1_000_000))
        func read() -> Date { self.time.withLock { $0 } }
    }

    final class Fixture: Sendable {
        let clock = ManualClock()
        let loads = Mutex(0)
        let failing = Mutex(false)
        let cache: CredentialCache

        init() {
            let clock = self.clock
            self.cache = CredentialCache(
                refreshWindow: 300, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }),
                now: { clock.read() })
        }

        func advance(_ seconds: TimeInterval) { self.clock.time.withLock { $0 += seconds } }

        /// Credentials numbered by load, valid for an hour from the fixture's now.
        func get() async throws -> S3Credentials {
            try await self.cache.credentials { [self] in
                if self.failing.withLock({ $0 }) { throw S3Error(code: .transport, message: "STS is down") }
                let number = self.loads.withLock { count -> Int in
                    count += 1
                    return count
                }
                return S3Credentials(
                    accessKeyID: "KEY\(number)", secretAccessKey: "s", expiration: self.clock.read() + 3_600)
            }
        }

        /// Waits (bounded) until the loader ran `count` times.
        func waitForLoads(_ count: Int) async throws {
            for _ in 0..<2_000 where self.loads.withLock({ $0 }) < count { try await Task.sleep(for: .milliseconds(5)) }
        }
    }

    @Test("Fresh credentials are served from the cache; near expiry the old ones are served while one refresh runs")
    func refreshAhead() async throws {
        let fixture = Fixture()
        #expect(try await fixture.get().accessKeyID == "KEY1")
        fixture.advance(3_000)  // 600 s left: still fresh
        #expect(try await fixture.get().accessKeyID == "KEY1")
        #expect(fixture.loads.withLock { $0 } == 1)
        fixture.advance(400)  // 200 s left: inside the refresh window
        #expect(try await fixture.get().accessKeyID == "KEY1", "served at once while refreshing")
        try await fixture.waitForLoads(2)
        #expect(try await fixture.get().accessKeyID == "KEY2")
        #expect(fixture.loads.withLock { $0 } == 2)
    }

    @Test("Expired credentials are never served: callers wait for one shared fetch")
    func expiredWaits() async throws {
        let fixture = Fixture()
        _ = try await fixture.get()
        fixture.advance(3_600)
        async let a = fixture.get()
        async let b = fixture.get()
        let keys = try await [a.accessKeyID, b.accessKeyID]
        #expect(keys == ["KEY2", "KEY2"])
        #expect(fixture.loads.withLock { $0 } == 2)
    }

    @Test("A failed background refresh keeps the current credentials until they expire; then the error reaches callers")
    func failedRefresh() async throws {
        let fixture = Fixture()
        _ = try await fixture.get()
        fixture.failing.withLock { $0 = true }
        fixture.advance(3_400)
        #expect(try await fixture.get().accessKeyID == "KEY1")
        fixture.advance(190)  // 10 s left, inside the expiry margin
        await #expect(throws: S3Error.self) { _ = try await fixture.get() }
        fixture.failing.withLock { $0 = false }
        #expect(try await fixture.get().accessKeyID == "KEY2")
    }

    @Test("invalidate() makes the next call fetch, whatever the expiration says")
    func invalidate() async throws {
        let fixture = Fixture()
        _ = try await fixture.get()
        await fixture.cache.invalidate()
        #expect(try await fixture.get().accessKeyID == "KEY2")
    }
}
