import Foundation
import Logging
import Synchronization

// Maintenance of the writer: access times, expiry and eviction within maxBytes.
extension SQLiteWriter {
    /// Deletes up to `limit` expired entries. Returns how many; run by the tier in the background.
    @discardableResult
    func reclaimExpired(limit: Int) throws -> Int {
        let connection = try self.openConnectionOrThrow()
        return try self.writeTransaction(connection) {
            try self.deleteExpired(limit: Int64(limit), in: connection)
        }
    }

    /// Deletes every expired entry now. Returns how many were deleted.
    @discardableResult
    func removeExpired() throws -> Int {
        let connection = try self.openConnectionOrThrow()
        return try self.writeTransaction(connection) {
            try self.deleteExpired(limit: -1, in: connection)
        }
    }

    /// Deletes up to `limit` (-1: all) expired entries, bumping the maintenance counters of their
    /// keys' buckets only.
    private func deleteExpired(limit: Int64, in connection: SQLiteConnection) throws -> Int {
        let select = try connection.statement("SELECT key FROM entry WHERE expires_at <= ?1 LIMIT ?2")
        try select.bind(self.clock.nowMilliseconds(), at: 1)
        try select.bind(limit, at: 2)
        var keys: [String] = []
        while try select.step() { keys.append(select.text(at: 0)) }
        select.reset()
        let delete = try connection.statement("DELETE FROM entry WHERE key = ?1")
        for key in keys {
            delete.reset()
            try delete.bind(key, at: 1)
            try delete.run()
            self.accessLog.forget(key)
        }
        try WriteStamp.bumpMaintenance(forKeys: keys, in: connection)
        return keys.count
    }

    /// Evicts least recently used entries until the file is within ``Configuration/maxBytes``
    /// (after an open with a lower limit; writes evict as they go).
    ///
    /// - Returns: the entries evicted.
    func evictIfOverLimit() throws -> Int {
        let connection = try self.openConnectionOrThrow()
        let before = self.evictionCount
        try self.writeTransaction(connection) { try self.evictIfNeeded(connection) }
        return self.evictionCount - before
    }

    /// Writes what readers noted, after a short delay that lets notes accumulate into one transaction.
    nonisolated func scheduleMaintenance() {
        let delay = max(self.configuration.accessTimeResolution, .milliseconds(100))
        Task {
            try? await Task.sleep(for: delay)
            await self.runMaintenance()
        }
    }

    func runMaintenance() {
        guard let connection = self.connection, !self.accessLog.isEmpty else { return }
        do {
            try self.writeTransaction(connection) {
                try self.writePendingMaintenance(connection, now: self.clock.nowMilliseconds())
            }
        } catch {
            self.logger.debug("panza: SQLite maintenance deferred", metadata: ["error": "\(error)"])
            self.scheduleMaintenance()
        }
    }

    /// Writes the noted access times and deletes the entries found expired, inside a transaction.
    /// When the transaction fails, the notes are put back.
    func writePendingMaintenance(_ connection: SQLiteConnection, now: Int64) throws {
        let (touches, expired) = self.accessLog.drain()
        do {
            if !touches.isEmpty {
                let statement = try connection.statement(
                    "UPDATE entry SET accessed_at = ?1 WHERE key = ?2 AND accessed_at < ?1")
                for (key, time) in touches {
                    statement.reset()
                    try statement.bind(time, at: 1)
                    try statement.bind(key, at: 2)
                    try statement.run()
                }
            }
            if !expired.isEmpty {
                let statement = try connection.statement("DELETE FROM entry WHERE key = ?1 AND expires_at <= ?2")
                var deleted: [String] = []
                for key in expired {
                    statement.reset()
                    try statement.bind(key, at: 1)
                    try statement.bind(now, at: 2)
                    try statement.run()
                    if connection.changes > 0 { deleted.append(key) }
                }
                try WriteStamp.bumpMaintenance(forKeys: deleted, in: connection)
            }
        } catch {
            self.accessLog.restore(touches: touches, expired: expired)
            throw error
        }
    }

    /// Deletes least recently used entries until the stored bytes are at most 95% of the bound.
    /// Entries read or written in the same millisecond go in the order their rows were made.
    func evictIfNeeded(_ connection: SQLiteConnection) throws {
        let usage = try connection.statement("SELECT bytes FROM usage WHERE id = 0")
        var bytes = try usage.step() ? Int(usage.int64(at: 0)) : 0
        usage.reset()
        guard bytes > self.configuration.maxBytes else { return }
        let target = self.configuration.maxBytes - self.configuration.maxBytes / 20
        let oldest = try connection.statement("SELECT key, size FROM entry ORDER BY accessed_at, rowid LIMIT 256")
        let delete = try connection.statement("DELETE FROM entry WHERE key = ?")
        var evicted: [String] = []
        while bytes > target {
            oldest.reset()
            var victims: [(String, Int)] = []
            while try oldest.step() {
                victims.append((oldest.text(at: 0), Int(oldest.int64(at: 1))))
            }
            oldest.reset()
            guard !victims.isEmpty else { break }
            for (key, size) in victims where bytes > target {
                delete.reset()
                try delete.bind(key, at: 1)
                try delete.run()
                bytes -= size
                evicted.append(key)
                self.accessLog.forget(key)
            }
        }
        try WriteStamp.bumpMaintenance(forKeys: evicted, in: connection)
        self.evictions.add(evicted.count, ordering: .relaxed)
        self.logger.debug("panza: evicted SQLite entries", metadata: ["count": "\(evicted.count)"])
    }
}
