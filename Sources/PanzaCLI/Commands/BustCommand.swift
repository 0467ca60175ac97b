import ArgumentParser
import Panza
import PanzaS3

struct BustCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bust",
        abstract: "Remove every entry of one or more memoize ids."
    )

    @OptionGroup var options: CacheOptions
    @OptionGroup var s3: S3Options

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
        if let s3 = try self.s3.makeTier() {
            try await s3.apply(self.ids.map { .removeNamespace($0) })
            try await s3.close()
        }
        if self.options.json {
            try Output.json(["removed": removed])
        } else {
            print("removed \(removed) entries of \(self.ids.joined(separator: ", "))")
        }
    }
}
