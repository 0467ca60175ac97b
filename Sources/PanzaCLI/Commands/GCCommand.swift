import ArgumentParser
import Foundation
import Panza
import PanzaS3

struct GCCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc",
        abstract: "Delete the shared bucket's entries not used since a cut-off, and what busts left behind.",
        discussion: """
            Deletes from the S3 prefix: entries whose object was last written or refreshed before \
            the cut-off (readers refresh the objects they are served once they are older than \
            refreshAfter, 7 days by default), entries of older generations of busted ids, and \
            invalidation log entries older than the cut-off that no longer define a generation. \
            The cut-off should be well above refreshAfter. Local SQLite files are not touched \
            (caches drop local entries older than the cut-off when they read the log next).
            """
    )

    @OptionGroup var s3: S3Options

    @Option(help: "Delete what was not used for this long: 30d, 12h, 90m (default: 30d).")
    var olderThan = "30d"

    @Flag(help: "Print what would be deleted, and delete nothing.")
    var dryRun = false

    @Flag(help: "Print JSON.")
    var json = false

    func run() async throws {
        guard let tier = try self.s3.makeTier() else {
            throw CLIError(message: "gc works on the S3 tier: give --s3-bucket (or PANZA_S3_BUCKET)", exitCode: 64)
        }
        let age = try Self.parseAge(self.olderThan)
        let cutoff = Int64(Date().timeIntervalSince1970 * 1_000) - age
        let plan = try await tier.planGarbageCollection(cutoffMilliseconds: cutoff)
        if self.dryRun || plan.all.isEmpty {
            if self.json {
                try Output.json(GCReport(plan: plan, deleted: false))
            } else {
                for key in plan.all { print(key) }
                print(
                    "\(self.dryRun ? "would delete" : "deleted") \(plan.all.count) objects (\(Output.bytes(plan.bytes))): "
                        + "\(plan.unused.count) unused since \(Output.date(cutoff)), "
                        + "\(plan.oldGenerations.count) of busted generations, \(plan.logEntries.count) log entries; "
                        + "kept \(plan.kept)")
            }
            try await tier.close()
            return
        }
        let bar = ProgressBar(total: plan.all.count, label: "deleting", enabled: !self.json)
        try await tier.collectGarbage(plan) { done, _ in bar.update(done) }
        bar.finish()
        try await tier.close()
        if self.json {
            try Output.json(GCReport(plan: plan, deleted: true))
        } else {
            print(
                "deleted \(plan.all.count) objects (\(Output.bytes(plan.bytes))): \(plan.unused.count) unused since "
                    + "\(Output.date(cutoff)), \(plan.oldGenerations.count) of busted generations, "
                    + "\(plan.logEntries.count) log entries; kept \(plan.kept)")
        }
    }

    /// `30d`, `12h`, `90m`, `45s` in milliseconds.
    static func parseAge(_ text: String) throws -> Int64 {
        let units: [Character: Int64] = ["d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1_000]
        guard let unit = text.last.flatMap({ units[$0] }), let count = Int64(text.dropLast()), count >= 0 else {
            throw CLIError(message: "--older-than takes a number and a unit, d, h, m or s: '\(text)'", exitCode: 64)
        }
        return count * unit
    }
}

/// What `panza gc --json` prints.
struct GCReport: Encodable {
    var deleted: Bool
    var cutoff: Int64
    var unused: [String]
    var oldGenerations: [String]
    var logEntries: [String]
    var bytes: Int
    var kept: Int

    init(plan: GarbagePlan, deleted: Bool) {
        self.deleted = deleted
        self.cutoff = plan.cutoffMilliseconds
        self.unused = plan.unused
        self.oldGenerations = plan.oldGenerations
        self.logEntries = plan.logEntries
        self.bytes = plan.bytes
        self.kept = plan.kept
    }
}
