import Foundation
import Logging

/// Keeps the last credentials and fetches new ones before they expire.
///
/// Credentials that expire within ``refreshWindow`` are still served while one background fetch
/// replaces them; expired ones (or none) make callers wait for one shared fetch. A failed
/// background fetch keeps the current credentials until they expire.
actor CredentialCache {
    /// How long before `expiration` a refresh starts.
    let refreshWindow: TimeInterval
    /// Credentials this close to `expiration` are treated as expired (clock skew, request time).
    let expiryMargin: TimeInterval = 15
    /// The least time between two background refreshes, so that short-lived credentials do not
    /// make every request start one.
    let minimumRefreshInterval: TimeInterval = 10
    private let now: @Sendable () -> Date
    private let logger: Logger
    private var current: S3Credentials?
    private var inFlight: Task<S3Credentials, any Error>?
    private var lastBackgroundRefresh: Date?

    init(refreshWindow: TimeInterval = 300, logger: Logger, now: @escaping @Sendable () -> Date = Date.init) {
        self.refreshWindow = refreshWindow
        self.logger = logger
        self.now = now
    }

    func credentials(load: @escaping @Sendable () async throws -> S3Credentials) async throws -> S3Credentials {
        let now = self.now()
        if let current {
            guard let expiration = current.expiration else { return current }
            if expiration.timeIntervalSince(now) > self.refreshWindow { return current }
            if expiration.timeIntervalSince(now) > self.expiryMargin {
                let recently =
                    self.lastBackgroundRefresh.map { now.timeIntervalSince($0) < self.minimumRefreshInterval } ?? false
                if self.inFlight == nil, !recently {
                    self.lastBackgroundRefresh = now
                    let task = self.refresh(load)
                    Task { [logger] in
                        do { _ = try await task.value } catch {
                            logger.warning(
                                "panza: refreshing S3 credentials failed; the current ones are kept until they expire",
                                metadata: ["error": "\(error)"])
                        }
                    }
                }
                return current
            }
        }
        return try await (self.inFlight ?? self.refresh(load)).value
    }

    func invalidate() {
        self.current = nil
    }

    private func refresh(_ load: @escaping @Sendable () async throws -> S3Credentials) -> Task<S3Credentials, any Error>
    {
        if let inFlight { return inFlight }
        let task = Task {
            defer { self.finish() }
            let fresh = try await load()
            self.store(fresh)
            return fresh
        }
        self.inFlight = task
        return task
    }

    private func store(_ credentials: S3Credentials) { self.current = credentials }
    private func finish() { self.inFlight = nil }
}
