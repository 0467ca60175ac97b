import ArgumentParser
import Panza

struct VerifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check the checksum and structure of every stored blob.",
        discussion: "Exits with status 3 when corrupt entries are found and not removed."
    )

    @OptionGroup var options: CacheOptions

    @Flag(help: "Remove the entries that fail.")
    var remove = false

    func run() async throws {
        let tier = try await self.options.openExisting()
        let report = try await tier.verify(removeCorrupt: self.remove)
        await tier.close()
        if self.options.json {
            try Output.json(report)
        } else {
            print(
                "checked \(report.checked) entries: \(report.corruptKeys.count) corrupt\(report.removed ? ", removed" : "")"
            )
            for key in report.corruptKeys { print("  corrupt: \(key)") }
        }
        if !report.corruptKeys.isEmpty && !report.removed {
            throw ExitCode(3)
        }
    }
}
