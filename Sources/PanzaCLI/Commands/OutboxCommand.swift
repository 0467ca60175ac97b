import ArgumentParser
import Panza
import PanzaS3

struct OutboxCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "outbox",
        abstract: "Show uploads waiting for S3 and the dead letters; retry or discard the dead letters.",
        discussion: """
            An upload that S3 refuses for good, or that fails as many times as the cache allows, is moved \
            to the dead letters instead of blocking the uploads behind it. --retry puts them back in the \
            outbox as the file now sees them (a key is sent with its current local entry, or removed when \
            it has none); with an S3 bucket given, they are sent at once. Exit status 3 when dead letters \
            remain.
            """
    )

    @OptionGroup var options: CacheOptions
    @OptionGroup var s3: S3Options

    @Flag(help: "Put every dead letter back in the outbox (and send it, when an S3 bucket is given).")
    var retry = false

    @Flag(help: "Delete every dead letter.")
    var discard = false

    @Option(help: "List at most this many dead letters.")
    var limit = 50

    struct Report: Encodable {
        var path: String
        var pendingUploads: Int
        var deadLetterCount: Int
        var deadLetters: [DeadLetter]
        var retried: Int?
        var discarded: Int?
    }

    func validate() throws {
        guard !(self.retry && self.discard) else { throw ValidationError("give --retry or --discard, not both") }
    }

    func run() async throws {
        let tier = try await self.options.openExisting()
        var retried: Int?
        var discarded: Int?
        if self.retry { retried = try await tier.retryDeadLetters() }
        if self.discard { discarded = try await tier.discardDeadLetters() }
        await tier.close()
        if self.retry, let remote = try self.s3.makeTier() {
            var configuration = TieredCache.Configuration()
            configuration.memory = nil
            configuration.sqlite = .init(path: self.options.resolvedPath)
            configuration.remote = remote
            configuration.modes = CacheModes()
            let cache = try await TieredCache(configuration: configuration)
            do {
                try await cache.flush()
            } catch {
                try? await cache.close()
                throw error
            }
            try await cache.close()
        }
        let reopened = try await self.options.openExisting()
        let report = Report(
            path: self.options.resolvedPath,
            pendingUploads: try await reopened.outboxCount(),
            deadLetterCount: try await reopened.deadLetterCount(),
            deadLetters: try await reopened.deadLetters(limit: self.limit),
            retried: retried,
            discarded: discarded
        )
        await reopened.close()
        if self.options.json {
            try Output.json(report)
        } else {
            if let retried { print("retried   \(retried) dead letters") }
            if let discarded { print("discarded \(discarded) dead letters") }
            print("outbox    \(report.pendingUploads) uploads pending")
            print("dead      \(report.deadLetterCount) dead letters")
            if !report.deadLetters.isEmpty {
                print("")
                Output.table(
                    [["ID", "OPERATION", "KEY", "ATTEMPTS", "FAILED", "ERROR"]]
                        + report.deadLetters.map { letter in
                            [
                                "\(letter.id)", letter.operation, letter.key ?? letter.namespace ?? "*",
                                "\(letter.attempts)",
                                Output.date(letter.failedAtMilliseconds), String(letter.error.prefix(80)),
                            ]
                        }
                )
            }
        }
        if report.deadLetterCount > 0 {
            throw CLIError(
                message: "\(report.deadLetterCount) dead letters remain (panza outbox --retry or --discard)",
                exitCode: 3
            )
        }
    }
}
