import ArgumentParser
import Panza

struct BustCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bust",
        abstract: "Remove every entry of one or more memoize ids."
    )

    @OptionGroup var options: CacheOptions

    @Argument(help: "Memoize ids.")
    var ids: [String]

    func validate() throws {
        guard !self.ids.isEmpty else { throw ValidationError("give at least one memoize id") }
    }

    func run() async throws {
        let tier = try await self.options.openExisting()
        let before = try await tier.usage().entries
        try await tier.apply(self.ids.map { .removeNamespace($0) })
        let removed = before - (try await tier.usage().entries)
        await tier.close()
        if self.options.json {
            try Output.json(["removed": removed])
        } else {
            print("removed \(removed) entries of \(self.ids.joined(separator: ", "))")
        }
    }
}
