// A child process for the tests that need more than one process: several processes on one SQLite
// file, persistence across processes, and SIGKILL after `flush()`.
//
// Usage:
//   PanzaTestWorker write-and-wait DB COUNT PREFIX   set COUNT values, flush, print "flushed", then block
//   PanzaTestWorker hammer DB COUNT WORKER           interleave writes and reads; print "ok READS"
//   PanzaTestWorker memo DB CITY                     one memoized call; print "value loads"
//   PanzaTestWorker service DB REQUESTS              the example service (ExampleService.swift): serve
//                                    REQUESTS memoized calls, print "served PENDING", run until
//                                    SIGTERM, shut down gracefully, print "stopped"
//   PanzaTestWorker s3-write-and-wait DB COUNT ENDPOINT BUCKET
//                                    set COUNT values with an S3 tier at ENDPOINT (credentials from
//                                    PANZA_TEST_S3_*); once they are in SQLite and its outbox, print
//                                    "persisted", then block
//   PanzaTestWorker large DB write|read MIB SEED [ENDPOINT BUCKET]
//                                    memoized call returning MIB MiB of seeded random bytes, with
//                                    memory (64 MiB), SQLite and, given ENDPOINT, S3 tiers: "write"
//                                    calls it and flushes; "read" calls it with a loader that fails,
//                                    so the value must come from a tier, and checks every byte.
//                                    Prints "ok LOADS PEAK_RSS_BYTES"
//   PanzaTestWorker shared DB ENDPOINT BUCKET POLL_MS [SIGNING_KEYS]
//                                    a cache on DB (memory, SQLite) and an S3 tier (prefix "v1",
//                                    polling invalidations every POLL_MS, 0 for never), reading
//                                    commands from standard input and answering each with one line
//                                    "= ...": see SharedCacheWorker.swift
//   PanzaTestWorker refresh DB NOW_MS
//                                    a cache on DB whose clock stands at NOW_MS, serving stale
//                                    entries and refreshing them: see RefreshWorker.swift
//   PanzaTestWorker hold-lock DB MILLISECONDS
//                                    take the SQLite write lock (BEGIN IMMEDIATE), print "locked",
//                                    hold it that long, commit, print "released"
//   PanzaTestWorker memory-statistics DB off|on
//                                    with "off", SQLiteTier.disableSQLiteMemoryStatistics() first;
//                                    then a cache on DB (memory off) sets, flushes and reads 100
//                                    values, and the worker prints "disabled=B used=BYTES again=B":
//                                    the first call's result, sqlite3_memory_used(), and the result
//                                    of a second call made once SQLite is initialized
//   PanzaTestWorker script DB        read operations from standard input, one a line, apply them
//                                    to a cache on DB (memory off) and answer each with "= ok" or
//                                    "= VALUE" ("= nil" on a miss), see CommandLoop.swift: "set K V",
//                                    "get K", "remove K", "flush"
import CPanzaSQLite
import Foundation
import Panza
import PanzaS3
import PanzaTestSupport

struct Forecast: Codable, Sendable, Equatable {
    var city: String
    var days: Int
    var temperatures: [Double]
}

func openCache(_ path: String) async throws -> TieredCache {
    var configuration = TieredCache.Configuration()
    configuration.memory = .init(maxEntries: 100, maxBytes: 1 << 20)
    configuration.sqlite = .init(path: path, maxBytes: 256 << 20)
    configuration.modes = CacheModes(environment: nil)  // the tests set BUST_CACHE, CACHE_ONLY, PRINT_CACHE_MISSES
    return try await TieredCache(configuration: configuration)
}

/// A tier on the test server (credentials from PANZA_TEST_S3_*).
func testS3Tier(endpoint: String, bucket: String, prefix: String = "v1") -> S3Tier.Configuration {
    let environment = ProcessInfo.processInfo.environment
    return S3Tier.Configuration(
        bucket: bucket,
        prefix: prefix,
        endpoint: endpoint,
        credentials: S3Credentials(
            accessKeyID: environment["PANZA_TEST_S3_ACCESS_KEY"] ?? "",
            secretAccessKey: environment["PANZA_TEST_S3_SECRET_KEY"] ?? ""
        )
    )
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("worker: \(message)\n".utf8))
    exit(2)
}

let arguments = CommandLine.arguments
guard arguments.count >= 3 else { fail("usage: PanzaTestWorker COMMAND DB ...") }
let path = arguments[2]

do {
    switch arguments[1] {
    case "write-and-wait":
        let count = Int(arguments[3])!
        let prefix = arguments[4]
        let cache = try await openCache(path)
        for index in 0..<count {
            try await cache.set("value-\(index)", forKey: "\(prefix)-\(index)")
        }
        try await cache.flush()
        FileHandle.standardOutput.write(Data("flushed\n".utf8))
        while true { try await Task.sleep(for: .seconds(60)) }

    case "hammer":
        let count = Int(arguments[3])!
        let worker = arguments[4]
        let cache = try await openCache(path)
        var reads = 0
        for index in 0..<count {
            try await cache.set(Array(repeating: UInt8(index & 0xFF), count: 512), forKey: "\(worker)-\(index)")
            if index % 10 == 0 { try await cache.flush() }
            // Read keys of every worker, which come from SQLite once memory evicted them.
            for other in ["a", "b", "c"] {
                if try await cache.value(forKey: "\(other)-\(index / 2)", as: [UInt8].self) != nil { reads += 1 }
            }
        }
        try await cache.flush()
        let statistics = cache.statistics
        try await cache.close()
        if statistics.writeFailures > 0 || statistics.tiers["sqlite"]!.errors > 0 {
            fail("write failures \(statistics.writeFailures), read errors \(statistics.tiers["sqlite"]!.errors)")
        }
        print("ok \(reads)")

    case "service":
        try await runExampleService(path: path, requests: Int(arguments[3])!)

    case "memo":
        let city = arguments[3]
        let cache = try await openCache(path)
        let loads = LoadCounter()
        let forecast = cache.memoize(id: "forecast") { (city: String, days: Int) async throws -> Forecast in
            loads.increment()
            return Forecast(city: city, days: days, temperatures: [1.5, -2, 3.25])
        }
        let value = try await forecast(city, 3)
        try await cache.close()
        print("\(value.city) \(loads.value)")

    case "s3-write-and-wait":
        let count = Int(arguments[3])!
        var tierConfiguration = testS3Tier(endpoint: arguments[4], bucket: arguments[5])
        tierConfiguration.client.retry = .none
        tierConfiguration.client.connectTimeout = .milliseconds(500)
        var configuration = TieredCache.Configuration()
        configuration.sqlite = .init(path: path)
        configuration.remote = try S3Tier(configuration: tierConfiguration)
        configuration.modes = CacheModes()
        let cache = try await TieredCache(configuration: configuration)
        for index in 0..<count {
            try await cache.set("value-\(index)", forKey: "pending-\(index)")
        }
        // The uploads fail (the endpoint is down), but flush() returns only after the local
        // transaction, which holds the outbox, committed.
        do {
            try await cache.flush()
            fail("the upload to a dead endpoint succeeded")
        } catch {}
        FileHandle.standardOutput.write(Data("persisted\n".utf8))
        while true { try await Task.sleep(for: .seconds(60)) }

    case "shared":
        try await SharedCacheWorker.run(arguments: arguments)

    case "large":
        try await LargeValueWorker.run(arguments: Array(arguments.dropFirst(2)))

    case "refresh":
        try await RefreshWorker.run(arguments: arguments)

    case "hold-lock":
        let milliseconds = UInt32(arguments[3])!
        var handle: OpaquePointer?
        guard sqlite3_open_v2(path, &handle, SQLITE_OPEN_READWRITE, nil) == SQLITE_OK else { fail("open failed") }
        guard sqlite3_exec(handle, "BEGIN IMMEDIATE", nil, nil, nil) == SQLITE_OK else { fail("lock failed") }
        FileHandle.standardOutput.write(Data("locked\n".utf8))
        usleep(milliseconds * 1000)
        guard sqlite3_exec(handle, "COMMIT", nil, nil, nil) == SQLITE_OK else { fail("commit failed") }
        sqlite3_close(handle)
        FileHandle.standardOutput.write(Data("released\n".utf8))

    case "checkpoint":
        // A TRUNCATE checkpoint by another process, which must not wait: prints its result row.
        var handle: OpaquePointer?
        guard sqlite3_open_v2(path, &handle, SQLITE_OPEN_READWRITE, nil) == SQLITE_OK else { fail("open failed") }
        var statement: OpaquePointer?
        guard sqlite3_prepare_v2(handle, "PRAGMA wal_checkpoint(TRUNCATE)", -1, &statement, nil) == SQLITE_OK,
            sqlite3_step(statement) == SQLITE_ROW
        else { fail("checkpoint failed: \(String(cString: sqlite3_errmsg(handle)))") }
        print(
            "busy=\(sqlite3_column_int64(statement, 0)) log=\(sqlite3_column_int64(statement, 1))"
                + " checkpointed=\(sqlite3_column_int64(statement, 2))")
        sqlite3_finalize(statement)
        sqlite3_close(handle)

    case "memory-statistics":
        let disabled = arguments[3] == "off" ? SQLiteTier.disableSQLiteMemoryStatistics() : false
        var configuration = TieredCache.Configuration()
        configuration.memory = nil
        configuration.sqlite = .init(path: path)
        configuration.modes = CacheModes()
        let cache = try await TieredCache(configuration: configuration)
        for index in 0..<100 { try await cache.set(String(repeating: "v", count: 2_000), forKey: "k\(index)") }
        try await cache.flush()
        for index in 0..<100 {
            guard try await cache.value(forKey: "k\(index)", as: String.self) != nil else { fail("k\(index) missing") }
        }
        let used = sqlite3_memory_used()
        let again = SQLiteTier.disableSQLiteMemoryStatistics()
        try await cache.close()
        print("disabled=\(disabled) used=\(used) again=\(again)")

    case "script":
        var configuration = TieredCache.Configuration()
        configuration.memory = nil
        configuration.sqlite = .init(path: path)
        configuration.modes = CacheModes()
        let cache = try await TieredCache(configuration: configuration)
        try await CommandLoop.run(cache: cache, maxSplits: 2) { words in
            try await CommandLoop.cacheCommand(words, on: cache)
        }

    case "model-ops":
        // Seeded sets and removals of keys c-0..c-15, then flush, print the last write of each key
        // touched ("flushed c-3=V;c-7=nil"), then keep writing other keys (never flushed) until killed.
        var generator = SplitMix64(seed: UInt64(arguments[3])!)
        let count = Int(arguments[4])!
        var configuration = TieredCache.Configuration()
        configuration.memory = .init(maxEntries: 8, maxBytes: 1 << 20)
        configuration.sqlite = .init(path: path)
        configuration.modes = CacheModes()
        let cache = try await TieredCache(configuration: configuration)
        // The last write of each key this child touched ("nil" for a removal).
        var touched: [String: String] = [:]
        for step in 0..<count {
            let key = "c-\(generator.next() % 16)"
            if generator.next() % 4 == 0 {
                try await cache.removeValue(forKey: key)
                touched[key] = "nil"
            } else {
                let value = "\(arguments[3])-\(step)"
                try await cache.set(value, forKey: key)
                touched[key] = value
            }
        }
        try await cache.flush()
        let state = touched.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ";")
        FileHandle.standardOutput.write(Data("flushed \(state)\n".utf8))
        var step = 0
        while true {
            try await cache.set("unflushed-\(step)", forKey: "u-\(step % 64)")
            step += 1
            if step % 64 == 0 { try await Task.sleep(for: .milliseconds(1)) }
        }

    default:
        fail("unknown command \(arguments[1])")
    }
} catch {
    fail("\(error)")
}

final class LoadCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func increment() { self.lock.withLock { self.count += 1 } }
    var value: Int { self.lock.withLock { self.count } }
}
