import ArgumentParser
import Panza
import PanzaS3

struct RemoveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rm",
        abstract: "Remove entries by key."
    )

    @OptionGroup var options: CacheOptions
    @OptionGroup var s3: S3Options

    @Argument(help: "Full keys, as `panza ls` shows them.")
    var keys: [String]

    func validate() throws {
        guard !self.keys.isEmpty else { throw ValidationError("give at least one key") }
    }

    func run() async throws {
        let tier = try await self.options.openExisting()
        let before = try await tier.usage().entries
        // The namespace only matters to S3 object keys: memoize keys are `{id}/{hash}`.
        let operations: [CacheTierOperation] = self.keys.map { key in
            let namespace = key.contains("/") ? String(key.prefix { $0 != "/" }) : ""
            return .remove(CacheKey(namespace: namespace, rawValue: key))
        }
        try await tier.apply(operations)
        let removed = before - (try await tier.usage().entries)
        await tier.close()
        if let s3 = try self.s3.makeTier() {
            try await s3.apply(operations)
            try await s3.close()
        }
        if self.options.json {
            try Output.json(["removed": removed])
        } else {
            print("removed \(removed) of \(self.keys.count) keys")
        }
    }
}
