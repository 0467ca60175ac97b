import ArgumentParser
import Panza

struct ListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ls",
        abstract: "List entries, most recently used first."
    )

    @OptionGroup var options: CacheOptions

    @Option(name: .customLong("id"), help: "Only the entries of this memoize id (\"\" for plain keys).")
    var namespace: String?

    @Option(help: "At most this many entries (0 for all).")
    var limit = 100

    func run() async throws {
        let tier = try await self.options.openExisting()
        let entries = try await tier.entries(namespace: self.namespace, limit: self.limit > 0 ? self.limit : nil)
        await tier.close()
        if self.options.json {
            try Output.json(entries)
            return
        }
        Output.table(
            [["KEY", "SIZE", "STORED", "EXPIRES", "STATE"]]
                + entries.map {
                    [
                        $0.key, Output.bytes($0.size), Output.date($0.createdAtMilliseconds),
                        $0.expiresAtMilliseconds.map(Output.date) ?? "never",
                        Output.freshness(expiresAt: $0.expiresAtMilliseconds, staleUntil: $0.staleUntilMilliseconds),
                    ]
                }
        )
    }
}
