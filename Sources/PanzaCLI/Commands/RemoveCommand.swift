import ArgumentParser
import Panza

struct RemoveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rm",
        abstract: "Remove entries by key."
    )

    @OptionGroup var options: CacheOptions

    @Argument(help: "Full keys, as `panza ls` shows them.")
    var keys: [String]

    func validate() throws {
        guard !self.keys.isEmpty else { throw ValidationError("give at least one key") }
    }

    func run() async throws {
        let tier = try await self.options.openExisting()
        let before = try await tier.usage().entries
        try await tier.apply(self.keys.map { .remove(CacheKey(rawValue: $0)) })
        let removed = before - (try await tier.usage().entries)
        await tier.close()
        if self.options.json {
            try Output.json(["removed": removed])
        } else {
            print("removed \(removed) of \(self.keys.count) keys")
        }
    }
}
