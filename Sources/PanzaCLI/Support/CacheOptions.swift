import ArgumentParser
import Foundation
import Panza

/// Options every command shares.
struct CacheOptions: ParsableArguments {
    @Option(name: .long, help: "The SQLite cache file (default: $PANZA_SQLITE_PATH or ./panza-cache.sqlite).")
    var path: String?

    @Flag(name: .long, help: "Print machine-readable JSON.")
    var json = false

    var resolvedPath: String {
        self.path ?? ProcessInfo.processInfo.environment["PANZA_SQLITE_PATH"] ?? "panza-cache.sqlite"
    }

    /// Opens the SQLite tier of an existing cache file.
    func openExisting() async throws -> SQLiteTier {
        let path = self.resolvedPath
        guard FileManager.default.fileExists(atPath: path) else {
            throw CLIError(message: "no cache file at \(path) (give --path or set PANZA_SQLITE_PATH)")
        }
        return try await SQLiteTier.open(configuration: .init(path: path))
    }
}
