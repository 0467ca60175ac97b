import Logging
import Synchronization

/// Asks an ``InvalidationSharing`` tier for new invalidations at its interval and hands them to
/// the cache; lets lookups wait (bounded) for the first answer.
final class InvalidationFollower: Sendable {
    private let tier: any InvalidationSharing
    private let apply: @Sendable ([CacheInvalidation]) -> Void
    private let recorder: StatisticsRecorder
    private let logger: Logger
    /// The first poll, which lookups below memory wait for (at most the remote read timeout).
    private let firstPoll: Task<Void, Never>
    /// Whether the first poll has finished, successfully or not: read on every lookup below memory.
    private let firstPollDone: Flag
    private let loop = Mutex<Task<Void, Never>?>(nil)

    init(
        tier: any InvalidationSharing,
        recorder: StatisticsRecorder,
        logger: Logger,
        apply: @escaping @Sendable ([CacheInvalidation]) -> Void
    ) {
        self.tier = tier
        self.apply = apply
        self.recorder = recorder
        self.logger = logger
        let done = Flag()
        self.firstPollDone = done
        self.firstPoll = Task {
            _ = try? await Self.poll(tier: tier, recorder: recorder, logger: logger, apply: apply)
        }
        let firstPoll = self.firstPoll
        let interval = tier.invalidationPollInterval
        let task = Task {
            await firstPoll.value
            done.value.store(true, ordering: .releasing)
            guard let interval else { return }
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                guard !Task.isCancelled else { return }
                _ = try? await Self.poll(tier: tier, recorder: recorder, logger: logger, apply: apply)
            }
        }
        self.loop.withLock { $0 = task }
    }

    /// Whether lookups need not wait for the first poll any more (it finished, or one wait timed out).
    var isFirstPollDone: Bool { self.firstPollDone.value.load(ordering: .acquiring) }

    /// Waits for the first poll, at most `timeout`; returns at once after it.
    func waitForFirstPoll(timeout: Duration) async {
        guard !self.firstPollDone.value.load(ordering: .acquiring) else { return }
        let firstPoll = self.firstPoll
        if await Deadline.completes(within: timeout, { await firstPoll.value }) {
            // Done: later lookups need not wait, even before the polling task records it.
            self.firstPollDone.value.store(true, ordering: .releasing)
        } else {
            // One bounded wait in all: later lookups serve local entries at once until it answers.
            self.firstPollDone.value.store(true, ordering: .releasing)
            self.logger.warning(
                "panza: the shared tier's invalidations could not be read in time; serving local entries",
                metadata: ["tier": "\(self.tier.name)", "timeout": "\(timeout)"])
        }
    }

    /// Polls now; returns how many invalidations were applied.
    func pollNow() async throws -> Int {
        await self.firstPoll.value
        return try await Self.poll(tier: self.tier, recorder: self.recorder, logger: self.logger, apply: self.apply)
    }

    /// Stops polling.
    func stop() {
        self.loop.withLock { $0?.cancel() }
        self.firstPoll.cancel()
    }

    private static func poll(
        tier: any InvalidationSharing,
        recorder: StatisticsRecorder,
        logger: Logger,
        apply: @Sendable ([CacheInvalidation]) -> Void
    ) async throws -> Int {
        let invalidations: [CacheInvalidation]
        do {
            invalidations = try await tier.newInvalidations()
        } catch {
            recorder.add(.invalidationPollFailures)
            logger.warning(
                "panza: could not read the shared tier's invalidations; local entries are served until it answers",
                metadata: ["tier": "\(tier.name)", "error": "\(error)"])
            throw error
        }
        guard !invalidations.isEmpty else { return 0 }
        apply(invalidations)
        recorder.add(.invalidationsApplied, invalidations.count)
        logger.debug(
            "panza: applied invalidations from other caches",
            metadata: ["tier": "\(tier.name)", "count": "\(invalidations.count)"])
        return invalidations.count
    }

    /// A flag that tasks made in `init` can hold.
    private final class Flag: Sendable {
        let value = Atomic<Bool>(false)
    }
}
