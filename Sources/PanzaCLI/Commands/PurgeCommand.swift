import ArgumentParser
import Panza
import PanzaS3

struct PurgeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "purge",
        abstract:
            "Remove every entry (in S3 too, with --s3-bucket), only the expired ones, or move an unreadable file aside.",
        discussion: """
            --rebuild is the way out of a corrupt cache file: it moves the file (and its -wal and -shm \
            files) to <path>.unreadable-<time>, so that the next open starts a new one. It refuses a \
            readable file and a database of another application.
            """
    )

    @OptionGroup var options: CacheOptions
    @OptionGroup var s3: S3Options

    @Flag(help: "Only remove expired entries.")
    var expired = false

    @Flag(help: "Return free space to the file system afterwards (VACUUM).")
    var compact = false

    @Flag(help: "Move an unreadable (corrupt) cache file aside.")
    var rebuild = false

    func validate() throws {
        if self.rebuild && (self.expired || self.compact) {
            throw ValidationError("--rebuild cannot be combined with --expired or --compact")
        }
    }

    func run() async throws {
        if self.rebuild {
            let movedTo = try SQLiteTier.moveAsideUnreadableFile(atPath: self.options.resolvedPath)
            if self.options.json {
                try Output.json(["movedTo": movedTo])
            } else {
                print("moved the unreadable file to \(movedTo); the next open starts a new cache")
            }
            return
        }
        let tier = try await self.options.openExisting()
        let before = try await tier.usage().entries
        if self.expired {
            try await tier.removeExpired()
        } else {
            try await tier.apply([.removeAll])
            if let s3 = try self.s3.makeTier() {
                try await s3.purgeAll()
                try await s3.close()
            }
        }
        if self.compact { try await tier.compact() }
        let removed = before - (try await tier.usage().entries)
        await tier.close()
        if self.options.json {
            try Output.json(["removed": removed])
        } else {
            print("removed \(removed) entries")
        }
    }
}
