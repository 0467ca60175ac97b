import ArgumentParser
import Foundation
import Panza
import PanzaS3

struct SyncCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sync",
        abstract: "Upload local entries that the S3 tier does not have.",
        discussion: "Lists the bucket once, then uploads what is missing, with a progress bar on a terminal."
    )

    @OptionGroup var options: CacheOptions
    @OptionGroup var s3: S3Options

    @Option(help: "Uploads in flight at once.")
    var concurrency = 16

    struct Report: Encodable {
        var localEntries: Int
        var alreadyInS3: Int
        var uploaded: Int
        var uploadedBytes: Int
        /// Local entries made before a bust recorded in the bucket: never uploaded.
        var busted: Int
    }

    func run() async throws {
        guard let tier = try self.s3.makeTier() else {
            throw CLIError(message: "sync needs an S3 bucket: give --s3-bucket or set PANZA_S3_BUCKET")
        }
        let sqlite = try await self.options.openExisting()
        let local = try await sqlite.entries()
        // Object keys depend on the ids' generations (busts): read the invalidation log first.
        _ = try await tier.newInvalidations()
        let remote = Set(try await tier.allObjectKeys())
        let missing = local.filter {
            !remote.contains(tier.objectKey(for: CacheKey(namespace: $0.namespace, rawValue: $0.key)))
        }
        let progress = ProgressBar(total: missing.count, label: "uploading", enabled: !self.options.json)
        var uploadedBytes = 0
        var uploaded = 0
        var busted = 0
        var index = 0
        while index < missing.count {
            let batch = Array(missing[index..<min(index + self.concurrency * 4, missing.count)])
            var operations: [CacheTierOperation] = []
            for entry in batch {
                guard let blob = try await sqlite.storedBlob(forKey: entry.key) else { continue }
                let key = CacheKey(namespace: entry.namespace, rawValue: entry.key)
                guard !tier.isInvalidated(key, createdAt: BlobEnvelope.createdAtMilliseconds(ofStored: blob)) else {
                    busted += 1
                    continue
                }
                uploaded += 1
                uploadedBytes += blob.count
                operations.append(
                    .store(
                        key: key, blob: blob,
                        expiresAtMilliseconds: entry.staleUntilMilliseconds ?? entry.expiresAtMilliseconds))
            }
            try await tier.apply(operations)
            index += batch.count
            progress.update(index)
        }
        progress.finish()
        await sqlite.close()
        try await tier.close()
        let report = Report(
            localEntries: local.count, alreadyInS3: local.count - missing.count, uploaded: uploaded,
            uploadedBytes: uploadedBytes, busted: busted)
        if self.options.json {
            try Output.json(report)
        } else {
            print(
                "\(report.localEntries) local entries: \(report.alreadyInS3) already in S3, \(report.uploaded) uploaded (\(Output.bytes(report.uploadedBytes)))"
                    + (report.busted > 0 ? ", \(report.busted) made before a bust and kept local" : "")
            )
        }
    }
}
