import Logging
import Synchronization

/// Flushing and closing: the end of every write's life.
extension TieredCache {
    /// Returns once every write made before the call has reached every tier (for a remote tier
    /// below SQLite, has been uploaded from the outbox).
    ///
    /// After it returns, those writes survive the process being killed.
    ///
    /// - Throws: a tier's error when writing to it fails meanwhile (the writes stay queued and are
    ///   retried, so a later `flush()` can still succeed); ``PanzaError/Code/writeDropped`` when
    ///   some of them failed for good and went to the dead letters; `CancellationError`.
    public func flush() async throws {
        for lane in self.lanes {
            try await lane.drainer.waitUntilApplied(lane.queue.lastSequence())
        }
        try await self.waitForOutboxUploads()
    }

    /// Returns once every write made before the call reached the memory and SQLite tiers (for a
    /// remote tier below SQLite, its outbox), without waiting for uploads.
    package func waitForLocalTiers() async throws {
        for lane in self.lanes {
            try await lane.drainer.waitUntilApplied(lane.queue.lastSequence())
        }
    }

    /// Applies what is queued, then closes every tier, within ``Configuration/closeTimeout``
    /// whatever the tiers do: it returns by then, strictly. Calls after `close()` throw
    /// ``PanzaError/Code/closed``; a write that races `close()` either is accepted before it, and
    /// then applied (or counted in the error), or throws ``PanzaError/Code/closed``.
    ///
    /// Uploads still in the SQLite outbox stay there for the next cache that opens the file
    /// (waiting for them at most ``Configuration/remoteCloseTimeout``).
    ///
    /// - Throws: ``PanzaError/Code/closeTimedOut`` naming how many operations of which tiers were
    ///   not applied when the deadline passed (they are lost, unless they were in the outbox);
    ///   otherwise the first error of a tier's `close()`.
    public func close() async throws {
        // Closing the fence is the one moment after which no write is accepted: every write checks
        // it in the critical section in which it enqueues.
        guard self.fence.close() else { return }
        self.metricsTask.withLock { $0?.cancel() }
        self.refreshes.close()
        self.invalidationFollower?.stop()
        defer { self.reportMetrics() }
        let clock = ContinuousClock()
        let deadline = clock.now + self.configuration.closeTimeout
        func remaining() -> Duration { max(.zero, deadline - clock.now) }
        for lane in self.lanes {
            lane.queue.close()
            lane.drainer.close()
        }
        let drainerTasks = self.drainerTasks
        let lanesDrained = await Deadline.completes(within: remaining()) {
            for task in drainerTasks { await task.value }
        }
        var lost: [String] = []
        if !lanesDrained {
            for lane in self.lanes where lane.queue.pendingCount > 0 {
                lost.append("\(lane.queue.pendingCount) for \(lane.queue.tierName)")
                lane.drainer.abandon()
            }
        }
        if let outbox = self.outbox {
            // Give pending uploads a bounded chance; what is left stays in the outbox for next time.
            let budget = min(self.configuration.remoteCloseTimeout, remaining())
            if lanesDrained, budget > .zero {
                _ = await Deadline.completes(within: budget) { try? await self.waitForOutboxUploads() }
            }
            outbox.drainer.abandon()
            self.outboxTask?.cancel()
            if let task = self.outboxTask {
                _ = await Deadline.completes(within: remaining()) { await task.value }
            }
            _ = await Deadline.completes(within: remaining()) {
                await outbox.queue.releaseLeases()
            }
        }
        let errors = ErrorBox()
        let slots = self.slots
        let trace = self.configuration.trace
        let tiersClosed = await Deadline.completes(within: remaining()) {
            for slot in slots.reversed() {
                do { try await slot.tier.close() } catch { errors.record(error) }
            }
            do { try trace?.close() } catch { errors.record(error) }
        }
        if !lost.isEmpty || !tiersClosed {
            var message = "close() gave up after \(self.configuration.closeTimeout)"
            if !lost.isEmpty { message += "; operations not applied: " + lost.joined(separator: ", ") }
            if !tiersClosed { message += "; a tier did not finish closing" }
            self.logger.error("panza: \(message)")
            throw PanzaError(code: .closeTimedOut, message: message)
        }
        if let error = errors.first { throw error }
    }
}
