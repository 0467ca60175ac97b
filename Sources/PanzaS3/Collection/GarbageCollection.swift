import Panza

/// What a garbage collection of an S3 tier's prefix deletes (`panza gc`).
package struct GarbagePlan: Sendable {
    /// Entries of current generations not read or written since the cut-off.
    package var unused: [String] = []
    /// Entries of older generations of busted ids (no reader asks for them any more).
    package var oldGenerations: [String] = []
    /// Invalidation log entries older than the cut-off that no longer define anything.
    package var logEntries: [String] = []
    /// Bytes the deletions free.
    package var bytes = 0
    /// Objects kept.
    package var kept = 0
    /// The cut-off, in milliseconds since 1970 (S3's clock, as `Last-Modified` is).
    package var cutoffMilliseconds: Int64

    /// Every object to delete.
    package var all: [String] { self.unused + self.oldGenerations + self.logEntries }
}

extension S3Tier {
    /// Lists the prefix and decides what a garbage collection deletes: entries whose object was
    /// last written or refreshed (``Configuration/refreshAfter``) before `cutoffMilliseconds`,
    /// entries of older generations of busted ids, and log entries older than the cut-off except
    /// those that still define a generation. Objects it does not recognise are kept, and so are
    /// nested caches' prefixes.
    ///
    /// - Complexity: one LIST request per 1,000 objects.
    package func planGarbageCollection(cutoffMilliseconds: Int64) async throws -> GarbagePlan {
        try await self.invalidationLog.sync(client: self.client)
        let lasting = self.invalidationLog.lastingEntries
        let base = self.configuration.prefix + "/"
        let listed = try await self.client.listAllObjects(prefix: base)
        let nested = listed.map(\.key).filter {
            $0.hasSuffix("/" + Self.prefixMarkerName) && $0 != base + Self.prefixMarkerName
                && !$0.hasPrefix(base + "_keys/")
        }.map { String($0.dropLast(Self.prefixMarkerName.count)) }
        var plan = GarbagePlan(cutoffMilliseconds: cutoffMilliseconds)
        for object in listed {
            let old = (object.lastModifiedMilliseconds ?? .max) < cutoffMilliseconds
            let path = object.key.dropFirst(base.count).split(separator: "/", omittingEmptySubsequences: false)
            if nested.contains(where: { object.key.hasPrefix($0) }) || path.first == Self.prefixMarkerName[...] {
                plan.kept += 1
                continue
            }
            if object.key.hasPrefix(self.invalidationLog.logPrefix) {
                if old, !lasting.contains(object.key), self.invalidationLog.parse(object.key) != nil {
                    plan.logEntries.append(object.key)
                    plan.bytes += object.size
                } else {
                    plan.kept += 1
                }
                continue
            }
            // `{id}/{hash}` (first generation) or `{id}/~{generation}/{hash}`; `_keys` for plain keys.
            guard path.count == 2 || (path.count == 3 && path[1].hasPrefix("~")) else {
                plan.kept += 1
                continue
            }
            let namespace = path[0] == "_keys" ? "" : String(path[0])
            let generation = path.count == 3 ? String(path[1].dropFirst()) : nil
            let current = self.invalidationLog.generation(of: namespace)
            if generation != current, (generation ?? "") < (current ?? "") {
                plan.oldGenerations.append(object.key)
                plan.bytes += object.size
            } else if generation == current, old {
                plan.unused.append(object.key)
                plan.bytes += object.size
            } else {
                plan.kept += 1
            }
        }
        return plan
    }

    /// Deletes what `plan` lists, 1,000 objects per request. Before deleting log entries it records
    /// a horizon at the plan's cut-off, so that caches drop local entries those removals covered.
    ///
    /// - Parameter progress: called after each request with the objects deleted so far and in all.
    package func collectGarbage(_ plan: GarbagePlan, progress: (Int, Int) -> Void = { _, _ in }) async throws {
        if !plan.logEntries.isEmpty {
            try await self.invalidationLog.recordHorizon(
                cutoff: plan.cutoffMilliseconds, client: self.client, now: WallClock.nowMilliseconds())
        }
        let all = plan.all
        var done = 0
        while done < all.count {
            let batch = Array(all[done..<min(done + 1_000, all.count)])
            try await self.client.delete(keys: batch)
            done += batch.count
            progress(done, all.count)
        }
    }
}
