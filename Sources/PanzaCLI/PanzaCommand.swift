import ArgumentParser
import Foundation
import Panza
import PanzaS3

@main
struct PanzaCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "panza",
        abstract: "Inspect and operate Panza caches.",
        discussion: """
            Commands read the SQLite file given by --path, or by PANZA_SQLITE_PATH, \
            or ./panza-cache.sqlite. Every command takes --json for machine-readable output.

            Exit status: 0 done; 1 failed (one line on standard error); 3 verify or outbox \
            found entries that need attention; 64 the command line was not understood.
            """,
        version: PanzaCommand.version,
        subcommands: [
            DemoCommand.self, StatsCommand.self, ListCommand.self, GetCommand.self,
            RemoveCommand.self, BustCommand.self, PurgeCommand.self, VerifyCommand.self, SyncCommand.self,
            OutboxCommand.self, KeysCommand.self, GCCommand.self,
            BenchCommand.self,
        ]
    )

    /// The version `panza --version` prints.
    static let version = "0.1.0-dev"

    /// Runs the command; a failure is one line on standard error and a non-zero exit, never a trace.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var command = command as? any AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch let error as PanzaError {
            Output.error(error)
            Foundation.exit(1)
        } catch let error as S3Error {
            Output.error(message: error.description)
            Foundation.exit(1)
        } catch let error as CLIError {
            Output.error(message: error.message)
            Foundation.exit(error.exitCode)
        } catch {
            exit(withError: error)
        }
    }
}
