import Foundation
import Panza

/// The line protocol of the interactive workers: one command a line on standard input, one answer
/// line `= ...` for each. `quit` closes the cache and answers `bye`; an unknown command or an error
/// answers `error ...`. The cache is closed when the input ends.
enum CommandLoop {
    /// Reads commands until `quit` or the end of the input.
    ///
    /// - Parameters:
    ///   - cache: closed on `quit` and at the end of the input.
    ///   - maxSplits: how many times a line is split at spaces (the last word keeps the rest).
    ///   - handle: the answer to a command, given its words; `nil` for an unknown command.
    static func run(
        cache: TieredCache,
        maxSplits: Int = .max,
        _ handle: (_ words: [String]) async throws -> String?
    ) async throws {
        while let line = readLine() {
            let words = line.split(separator: " ", maxSplits: maxSplits).map(String.init)
            do {
                if words.first == "quit" {
                    try await cache.close()
                    self.answer("bye")
                    return
                }
                self.answer(try await handle(words) ?? "error unknown command \(line)")
            } catch {
                self.answer("error \(error)")
            }
        }
        try await cache.close()
    }

    /// The answer to the commands every worker on a cache knows: `set KEY VALUE`, `get KEY`
    /// (`nil` on a miss), `remove KEY` and `flush`; `nil` for another command.
    static func cacheCommand(_ words: [String], on cache: TieredCache) async throws -> String? {
        switch words.first ?? "" {
        case "set":
            try await cache.set(words[2], forKey: words[1])
            return "ok"
        case "get": return try await cache.value(forKey: words[1], as: String.self) ?? "nil"
        case "remove":
            try await cache.removeValue(forKey: words[1])
            return "ok"
        case "flush":
            try await cache.flush()
            return "ok"
        default: return nil
        }
    }

    private static func answer(_ text: String) {
        FileHandle.standardOutput.write(Data("= \(text)\n".utf8))
    }
}
