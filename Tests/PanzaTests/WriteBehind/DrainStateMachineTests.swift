import Testing

@testable import Panza

/// The drain decisions, as a pure state machine: no SQLite, no tasks, no sleeping.
struct DrainStateMachineTests {
    static let configuration = DrainStateMachine.Configuration(
        maxBatch: 4,
        maxAttempts: 3,
        initialBackoff: .milliseconds(10),
        maxBackoff: .milliseconds(40),
        pollInterval: nil
    )

    @Test("Drains in full batches, goes idle when the queue is empty, and wakes when work arrives")
    func idleAndWake() {
        var machine = DrainStateMachine(configuration: Self.configuration)
        do {
            let result = machine.next(now: .zero)
            #expect(result == .drain(limit: 4))
        }
        do {
            let result = machine.claimedNothing(watermark: 0).isEmpty
            #expect(result)
        }
        do {
            let result = machine.next(now: .zero)
            #expect(result == .waitForWork(timeout: nil))
        }
        #expect(machine.isWaitingForWork)
        do {
            let result = machine.workArrived()
            #expect(result, "a parked drainer must be woken")
        }
        do {
            let result = machine.workArrived()
            #expect(!result, "a running drainer needs no second wake-up")
        }
        do {
            let result = machine.next(now: .zero)
            #expect(result == .drain(limit: 4))
        }
    }

    @Test("Work that arrives while a claim is finding nothing is not slept through (found by the model-checked test)")
    func noLostWakeUp() {
        var machine = DrainStateMachine(configuration: Self.configuration)
        do {
            let step = machine.next(now: .zero)
            #expect(step == .drain(limit: 4))
        }
        // The claim ran and found nothing; the writer queues and notifies before the drainer
        // reports it.
        do {
            let wake = machine.workArrived()
            #expect(!wake, "the drainer is not parked yet")
        }
        _ = machine.claimedNothing(watermark: 0)
        do {
            let step = machine.next(now: .zero)
            #expect(step == .drain(limit: 4), "the drainer would park with work queued")
        }
        _ = machine.claimedNothing(watermark: 0)
        do {
            let step = machine.next(now: .zero)
            #expect(step == .waitForWork(timeout: nil))
        }
    }

    @Test("A flush waiter ends when the watermark passes its target, and not before")
    func flushWaiters() {
        var machine = DrainStateMachine(configuration: Self.configuration)
        do {
            let result = machine.flush(id: 1, target: 0)
            #expect(result == .applied(id: 1))
        }
        do {
            let result = machine.flush(id: 2, target: 5)
            #expect(result == nil)
        }
        do {
            let result = machine.flush(id: 3, target: 9)
            #expect(result == nil)
        }
        do {
            let result = machine.succeeded(watermark: 4).isEmpty
            #expect(result)
        }
        do {
            let result = machine.succeeded(watermark: 5)
            #expect(result == [.applied(id: 2)])
        }
        do {
            let result = machine.cancelFlush(id: 3)
            #expect(result)
        }
        do {
            let result = machine.cancelFlush(id: 3)
            #expect(!result)
        }
        do {
            let result = machine.succeeded(watermark: 9).isEmpty
            #expect(result, "a cancelled waiter was resumed")
        }
    }

    @Test("A failure fails the waiters, backs off with doubling pauses, and retries the head alone")
    func backoff() {
        var machine = DrainStateMachine(configuration: Self.configuration)
        _ = machine.next(now: .zero)
        do {
            let result = machine.flush(id: 1, target: 3)
            #expect(result == nil)
        }
        let first = machine.failed(batchCount: 4, headAttempts: 1, permanent: false, now: .seconds(1))
        #expect(first.decision == .retry(after: .milliseconds(10)))
        #expect(first.failedWaiters == [.failed(id: 1)])
        do {
            let result = machine.next(now: .seconds(1))
            #expect(result == .sleep(until: .seconds(1) + .milliseconds(10)))
        }
        do {
            let result = machine.next(now: .seconds(1) + .milliseconds(10))
            #expect(result == .drain(limit: 1))
        }
        let second = machine.failed(batchCount: 1, headAttempts: 2, permanent: false, now: .seconds(2))
        #expect(second.decision == .retry(after: .milliseconds(20)))
        _ = machine.next(now: .seconds(3))
        // The pause doubles up to the bound.
        _ = machine.failed(batchCount: 2, headAttempts: 1, permanent: false, now: .seconds(3))
        _ = machine.next(now: .seconds(4))
        let capped = machine.failed(batchCount: 2, headAttempts: 1, permanent: false, now: .seconds(4))
        #expect(capped.decision == .retry(after: .milliseconds(40)))
        // A success restores full batches and the first pause.
        _ = machine.next(now: .seconds(5))
        _ = machine.succeeded(watermark: 3)
        do {
            let result = machine.next(now: .seconds(5))
            #expect(result == .drain(limit: 4))
        }
        let again = machine.failed(batchCount: 4, headAttempts: 1, permanent: false, now: .seconds(6))
        #expect(again.decision == .retry(after: .milliseconds(10)))
    }

    @Test("The head goes to the dead letters after maxAttempts, or at once when the failure is permanent")
    func deadLetters() {
        var machine = DrainStateMachine(configuration: Self.configuration)
        _ = machine.next(now: .zero)
        // A batch of several is never dead-lettered: its head is tried alone first.
        do {
            let result = machine.failed(batchCount: 3, headAttempts: 99, permanent: true, now: .zero).decision
            #expect(result != .deadLetter)
        }
        do {
            let result = machine.failed(batchCount: 1, headAttempts: 2, permanent: false, now: .zero).decision
            #expect(result != .deadLetter)
        }
        do {
            let result = machine.failed(batchCount: 1, headAttempts: 3, permanent: false, now: .zero).decision
            #expect(result == .deadLetter)
        }
        do {
            let result = machine.next(now: .zero)
            #expect(result == .drain(limit: 1), "a dead letter must not delay the next operation")
        }
        // A waiter is not failed by the failure that sets its write aside: it learns of the drop.
        #expect(machine.flush(id: 5, target: 8) == nil)
        do {
            let result = machine.failed(batchCount: 1, headAttempts: 1, permanent: true, now: .zero)
            #expect(result.decision == .deadLetter)
            #expect(result.failedWaiters.isEmpty)
        }
        do {
            let result = machine.deadLettered(watermark: 8)
            #expect(result == [.dropped(id: 5, count: 1)])
        }
    }

    @Test("A waiter whose writes went partly to the dead letters learns it")
    func droppedWaiters() {
        var machine = DrainStateMachine(configuration: Self.configuration)
        do {
            let result = machine.flush(id: 7, target: 2)
            #expect(result == nil)
        }
        do {
            let result = machine.deadLettered(watermark: 1).isEmpty
            #expect(result)
        }
        do {
            let result = machine.succeeded(watermark: 2)
            #expect(result == [.dropped(id: 7, count: 1)])
        }
        #expect(machine.drops == 1)
        do {
            let result = machine.flush(id: 8, target: 3)
            #expect(result == nil)
        }
        do {
            let result = machine.succeeded(watermark: 3)
            #expect(result == [.applied(id: 8)], "an older drop was charged to a newer waiter")
        }
    }

    @Test("Close finishes once the queue is empty; abandon finishes at once and ends every waiter")
    func closing() {
        var machine = DrainStateMachine(configuration: Self.configuration)
        _ = machine.next(now: .zero)
        do {
            let result = machine.close()
            #expect(!result, "a running drainer needs no wake-up to see close")
        }
        do {
            let result = machine.next(now: .zero)
            #expect(result == .drain(limit: 4), "close must drain what is queued")
        }
        _ = machine.claimedNothing(watermark: 0)
        do {
            let result = machine.next(now: .zero)
            #expect(result == .finish)
        }

        var stuck = DrainStateMachine(configuration: Self.configuration)
        _ = stuck.next(now: .zero)
        do {
            let result = stuck.flush(id: 1, target: 10)
            #expect(result == nil)
        }
        _ = stuck.failed(batchCount: 1, headAttempts: 1, permanent: false, now: .zero)
        do {
            let result = stuck.flush(id: 2, target: 10)
            #expect(result == nil)
        }
        do {
            let result = stuck.abandon()
            #expect(result == [.abandoned(id: 2)])
        }
        do {
            let result = stuck.next(now: .seconds(100))
            #expect(result == .finish)
        }
        do {
            let result = stuck.flush(id: 3, target: 10)
            #expect(result == .abandoned(id: 3))
        }
        do {
            let result = stuck.succeeded(watermark: 10).isEmpty
            #expect(result)
        }
    }

    @Test("An idle drainer with a poll interval wakes on its timer")
    func polling() {
        var configuration = Self.configuration
        configuration.pollInterval = .seconds(2)
        var machine = DrainStateMachine(configuration: configuration)
        _ = machine.next(now: .zero)
        _ = machine.claimedNothing(watermark: 0)
        do {
            let result = machine.next(now: .zero)
            #expect(result == .waitForWork(timeout: .seconds(2)))
        }
        machine.pollTimerFired()
        do {
            let result = machine.next(now: .seconds(2))
            #expect(result == .drain(limit: 4))
        }
        do {
            let result = machine.close()
            #expect(result == false)
        }
        // The claim in flight started before close: one more claim, then the end.
        _ = machine.claimedNothing(watermark: 0)
        do {
            let result = machine.next(now: .seconds(2))
            #expect(result == .drain(limit: 4))
        }
        _ = machine.claimedNothing(watermark: 0)
        do {
            let result = machine.next(now: .seconds(2))
            #expect(result == .finish)
        }
    }

    @Test("Only a claim made after close ends the drainer: a write accepted just before close is never left behind")
    func closeClaimsOnceMore() {
        // Running: the claim in flight ran before the write was queued; the write's workArrived()
        // comes after close (the model-checked test lost a `set` to this interleaving).
        var running = DrainStateMachine(configuration: Self.configuration)
        #expect(running.next(now: .zero) == .drain(limit: 4))
        #expect(running.close() == false)
        _ = running.claimedNothing(watermark: 0)
        #expect(running.next(now: .zero) == .drain(limit: 4), "the claim before close ended the drainer")
        _ = running.claimedNothing(watermark: 1)
        #expect(running.next(now: .zero) == .finish)

        // Idle: parked after a claim that found nothing; close wakes it to claim again.
        var idle = DrainStateMachine(configuration: Self.configuration)
        _ = idle.next(now: .zero)
        _ = idle.claimedNothing(watermark: 0)
        #expect(idle.close() == true, "a parked drainer must be woken by close")
        #expect(idle.next(now: .zero) == .drain(limit: 4))
        _ = idle.claimedNothing(watermark: 0)
        #expect(idle.next(now: .zero) == .finish)
    }

    @Test(
        "A dead-lettered operation resets the backoff: the next failure pauses the initial backoff, and batches are full"
    )
    func deadLetterResetsBackoff() {
        var machine = DrainStateMachine(configuration: Self.configuration)
        #expect(machine.next(now: .zero) == .drain(limit: 4))
        // The batch fails, then its head alone fails until it is dead-lettered; the backoff grows.
        var pauses: [Duration] = []
        var decision = machine.failed(batchCount: 4, headAttempts: 1, permanent: false, now: .zero).decision
        for attempt in 2...3 {
            if case .retry(let pause) = decision { pauses.append(pause) }
            decision = machine.failed(batchCount: 1, headAttempts: attempt, permanent: false, now: .zero).decision
        }
        #expect(decision == .deadLetter)
        #expect(pauses == [.milliseconds(10), .milliseconds(20)])
        _ = machine.deadLettered(watermark: 1)
        #expect(machine.next(now: .seconds(1)) == .drain(limit: 4), "full batches again after the poison is out")
        let next = machine.failed(batchCount: 4, headAttempts: 1, permanent: false, now: .seconds(1)).decision
        #expect(next == .retry(after: .milliseconds(10)), "the poison's backoff does not carry over")
    }
}
