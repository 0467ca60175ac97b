import ArgumentParser
import Foundation
import Panza
import PanzaS3

struct StatsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats",
        abstract: "Show how full a cache file is, per memoize id."
    )

    @OptionGroup var options: CacheOptions
    @OptionGroup var s3: S3Options

    @Option(name: .customLong("s3-timeout"), help: "Seconds to wait for S3 before calling it unreachable.")
    var s3Timeout: Int = 5

    struct Report: Encodable {
        var path: String
        var usage: SQLiteTier.Usage
        var pendingUploads: Int
        var deadLetters: Int
        var namespaces: [SQLiteTier.NamespaceSummary]
        var s3: S3Summary?
    }

    struct S3Summary: Encodable {
        var bucket: String
        var prefix: String
        /// Whether the listing got an answer within the timeout.
        var reachable: Bool
        var answeredInMilliseconds: Int?
        var error: String?
        var objects: Int?
        var bytes: Int?
    }

    @Flag(help: "Refresh once a second until interrupted (Ctrl-C); with --json, one document per refresh.")
    var watch = false

    func run() async throws {
        guard self.watch else { return try await self.report() }
        while true {
            if !self.options.json { print("\u{1B}[2J\u{1B}[H", terminator: "") }  // clear the screen
            try await self.report()
            fflush(nil)  // all streams: a pipe is block-buffered, and each refresh must reach it now
            try await Task.sleep(for: .seconds(1))
        }
    }

    /// Reads the file (and S3) once and prints what it found.
    private func report() async throws {
        let tier = try await self.options.openExisting()
        var s3Summary: S3Summary?
        if let s3 = try self.s3.makeTier(requestTimeout: .seconds(self.s3Timeout)) {
            var summary = S3Summary(bucket: s3.configuration.bucket, prefix: s3.configuration.prefix, reachable: false)
            let started = ContinuousClock.now
            do {
                var objects = 0
                var bytes = 0
                var token: String?
                repeat {
                    let page = try await s3.client.list(
                        prefix: s3.objectPrefix(namespace: nil), continuationToken: token)
                    objects += page.keys.count
                    bytes += page.sizes.reduce(0, +)
                    token = page.continuationToken
                    if summary.answeredInMilliseconds == nil {
                        let elapsed = ContinuousClock.now - started
                        summary.answeredInMilliseconds = Int(elapsed.wholeMilliseconds)
                    }
                } while token != nil
                summary.reachable = true
                summary.objects = objects
                summary.bytes = bytes
            } catch {
                summary.error = "\(error)"
            }
            s3Summary = summary
            try? await s3.close()
        }
        let report = Report(
            path: self.options.resolvedPath,
            usage: try await tier.usage(),
            pendingUploads: try await tier.outboxCount(),
            deadLetters: try await tier.deadLetterCount(),
            namespaces: try await tier.namespaceSummaries(),
            s3: s3Summary
        )
        await tier.close()
        if self.options.json {
            try Output.json(report)
            return
        }
        print("cache     \(report.path)")
        print("entries   \(report.usage.entries)")
        print("stored    \(Output.bytes(report.usage.bytes))")
        print("file      \(Output.bytes(report.usage.fileBytes))")
        print(
            "uploads   \(report.pendingUploads) pending (\(Output.bytes(report.usage.outboxBytes))), "
                + "\(report.deadLetters) dead letters (\(Output.bytes(report.usage.deadLetterBytes))), "
                + "\(report.usage.refusedUploads) refused for want of room (panza outbox)")
        if let s3 = report.s3 {
            if s3.reachable {
                print(
                    "s3        s3://\(s3.bucket)/\(s3.prefix): \(s3.objects ?? 0) objects, \(Output.bytes(s3.bytes ?? 0)), "
                        + "first answer in \(s3.answeredInMilliseconds ?? 0) ms"
                )
            } else {
                print("s3        s3://\(s3.bucket)/\(s3.prefix): UNREACHABLE: \(s3.error ?? "no answer")")
                print(
                    "          caches skip S3 reads after 5 failures in a row (circuit breaker) and keep uploads in the outbox"
                )
            }
        }
        guard !report.namespaces.isEmpty else { return }
        print("")
        Output.table(
            [["ID", "ENTRIES", "BYTES"]]
                + report.namespaces.map {
                    [$0.namespace.isEmpty ? "(plain keys)" : $0.namespace, "\($0.entries)", Output.bytes($0.bytes)]
                }
        )
    }
}
