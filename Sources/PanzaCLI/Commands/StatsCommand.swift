import ArgumentParser
import Panza

struct StatsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats",
        abstract: "Show how full a cache file is, per memoize id."
    )

    @OptionGroup var options: CacheOptions

    struct Report: Encodable {
        var path: String
        var usage: SQLiteTier.Usage
        var namespaces: [SQLiteTier.NamespaceSummary]
    }

    func run() async throws {
        let tier = try await self.options.openExisting()
        let report = Report(path: self.options.resolvedPath, usage: try await tier.usage(), namespaces: try await tier.namespaceSummaries())
        await tier.close()
        if self.options.json {
            try Output.json(report)
            return
        }
        print("cache     \(report.path)")
        print("entries   \(report.usage.entries)")
        print("stored    \(Output.bytes(report.usage.bytes))")
        print("file      \(Output.bytes(report.usage.fileBytes))")
        guard !report.namespaces.isEmpty else { return }
        print("")
        Output.table(
            [["ID", "ENTRIES", "BYTES"]]
                + report.namespaces.map { [$0.namespace.isEmpty ? "(plain keys)" : $0.namespace, "\($0.entries)", Output.bytes($0.bytes)] }
        )
    }
}
