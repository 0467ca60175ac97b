import ArgumentParser
import Foundation
import Panza
import PanzaS3

struct GetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get",
        abstract: "Print the value stored under a key.",
        discussion: "JSON and text values are printed as they are; byte values as base64 (or raw with --raw)."
    )

    @OptionGroup var options: CacheOptions
    @OptionGroup var s3: S3Options

    @Argument(help: "The full key, as `panza ls` shows it.")
    var key: String

    @Flag(help: "Write the payload bytes to standard output unchanged.")
    var raw = false

    struct Entry: Encodable {
        var key: String
        var contentType: String
        var codec: String
        var storedBytes: Int
        var payloadBytes: Int
        var createdAt: String
        var expiresAt: String?
        /// The end of the stale period (see `Freshness`), when the entry has one.
        var staleUntil: String?
        /// `fresh`, `stale` (past its time to live, within its stale period) or `expired`.
        var state: String
        var expired: Bool
        var value: String
    }

    func run() async throws {
        let tier = try await self.options.openExisting()
        var stored = try await tier.storedBlob(forKey: self.key)
        await tier.close()
        if stored == nil, let s3 = try self.s3.makeTier() {
            let namespace = self.key.contains("/") ? String(self.key.prefix { $0 != "/" }) : ""
            stored = try await s3.blob(forKey: CacheKey(namespace: namespace, rawValue: self.key))
            try await s3.close()
        }
        guard let stored else {
            throw CLIError(message: "no entry under key \(self.key)")
        }
        let envelope = try BlobEnvelope.decode(stored)
        if self.raw {
            FileHandle.standardOutput.write(Data(envelope.payload))
            return
        }
        let value: String =
            switch envelope.contentType {
            case .bytes: Data(envelope.payload).base64EncodedString()
            case .text, .json: String(decoding: envelope.payload, as: UTF8.self)
            case .null: envelope.payload.first.map { $0 == 0 ? "nil" : "nil (inside \($0) Optional layers)" } ?? "nil"
            }
        let entry = Entry(
            key: self.key,
            contentType: "\(envelope.contentType)",
            codec: "\(envelope.storedCodec)",
            storedBytes: stored.count,
            payloadBytes: envelope.payload.count,
            createdAt: Output.date(envelope.createdAtMilliseconds),
            expiresAt: envelope.expiresAtMilliseconds.map(Output.date),
            staleUntil: envelope.staleForMilliseconds > 0
                ? envelope.expiresAtMilliseconds.map { Output.date($0 + envelope.staleForMilliseconds) } : nil,
            state: Output.freshness(
                expiresAt: envelope.expiresAtMilliseconds,
                staleUntil: envelope.expiresAtMilliseconds.map { $0 + envelope.staleForMilliseconds }),
            expired: envelope.isExpired(atMilliseconds: Int64(Date().timeIntervalSince1970 * 1000)),
            value: value
        )
        if self.options.json {
            try Output.json(entry)
        } else {
            print(value)
        }
    }
}
