import CBaselineLZ4
import CBaselineSQLite
import Foundation
import Synchronization

/// The physical limits Panza is measured against: SQLite and LZ4 called directly, and a bare
/// `Mutex`-guarded dictionary.
enum Baseline {
    /// A SQLite file driven through the C API with prepared statements, the fastest way to use it.
    final class RawSQLite {
        private var database: OpaquePointer?
        private var select: OpaquePointer?
        private var insert: OpaquePointer?

        init(path: String) {
            try? FileManager.default.removeItem(atPath: path)
            sqlite3_open_v2(path, &self.database, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nil)
            sqlite3_exec(
                self.database, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA mmap_size=268435456;", nil,
                nil, nil)
            sqlite3_exec(self.database, "CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL)", nil, nil, nil)
            sqlite3_prepare_v2(self.database, "SELECT value FROM kv WHERE key = ?", -1, &self.select, nil)
            sqlite3_prepare_v2(
                self.database, "INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", -1, &self.insert, nil)
        }

        deinit {
            sqlite3_finalize(self.select)
            sqlite3_finalize(self.insert)
            sqlite3_close_v2(self.database)
        }

        /// Inserts `count` entries in one transaction.
        func insertBatch(keys: ArraySlice<String>, value: [UInt8]) {
            sqlite3_exec(self.database, "BEGIN IMMEDIATE", nil, nil, nil)
            for key in keys {
                sqlite3_reset(self.insert)
                _ = key.withCString { baseline_bind_text(self.insert, 1, $0, -1) }
                _ = value.withUnsafeBytes { baseline_bind_blob(self.insert, 2, $0.baseAddress, Int32($0.count)) }
                precondition(sqlite3_step(self.insert) == SQLITE_DONE)
            }
            sqlite3_exec(self.database, "COMMIT", nil, nil, nil)
        }

        /// Looks a key up and copies its value out, as a cache must.
        func lookup(_ key: String) -> [UInt8]? {
            sqlite3_reset(self.select)
            _ = key.withCString { baseline_bind_text(self.select, 1, $0, -1) }
            guard sqlite3_step(self.select) == SQLITE_ROW, let pointer = sqlite3_column_blob(self.select, 0) else {
                return nil
            }
            let count = Int(sqlite3_column_bytes(self.select, 0))
            return Array(UnsafeRawBufferPointer(start: pointer, count: count))
        }
    }

    static func lz4Compress(_ input: [UInt8]) -> [UInt8] {
        let bound = Int(LZ4_compressBound(Int32(input.count)))
        return [UInt8](unsafeUninitializedCapacity: bound) { buffer, count in
            count = input.withUnsafeBytes { source in
                Int(
                    LZ4_compress_default(
                        source.baseAddress!.assumingMemoryBound(to: CChar.self),
                        UnsafeMutableRawPointer(buffer.baseAddress!).assumingMemoryBound(to: CChar.self),
                        Int32(input.count), Int32(bound)))
            }
        }
    }

    static func lz4Decompress(_ input: [UInt8], originalSize: Int) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: originalSize) { buffer, count in
            count = input.withUnsafeBytes { source in
                Int(
                    LZ4_decompress_safe(
                        source.baseAddress!.assumingMemoryBound(to: CChar.self),
                        UnsafeMutableRawPointer(buffer.baseAddress!).assumingMemoryBound(to: CChar.self),
                        Int32(input.count), Int32(originalSize)))
            }
        }
    }

    /// The least a thread-safe in-memory cache can cost: one lock and one dictionary lookup.
    final class LockedDictionary: Sendable {
        let storage = Mutex<[String: String]>([:])
        func lookup(_ key: String) -> String? { self.storage.withLock { $0[key] } }
    }
}
