import Synchronization

/// Waiting with a deadline for work that may never end (a tier that hangs), without waiting for it.
enum Deadline {
    /// Runs `body` in a task of its own and returns whether it finished within `duration`. When it
    /// did not, it goes on in the background; the caller stops waiting at the deadline.
    static func completes(within duration: Duration, _ body: @escaping @Sendable () async -> Void) async -> Bool {
        let outcome = Outcome()
        Task {
            await body()
            outcome.settle(true)
        }
        let timer = Task {
            try? await Task.sleep(for: max(duration, .zero))
            outcome.settle(false)
        }
        let finished = await outcome.value()
        timer.cancel()
        return finished
    }

    /// Runs `body` in a task of its own and returns its value, or `nil` when `duration` passed
    /// first (the body then goes on in the background). Rethrows the body's error.
    static func value<Value: Sendable>(
        within duration: Duration,
        _ body: @escaping @Sendable () async throws -> Value
    ) async throws -> Value? {
        let box = ResultBox<Value>()
        let finished = await self.completes(within: duration) {
            do {
                box.store(.success(try await body()))
            } catch {
                box.store(.failure(error))
            }
        }
        guard finished, let result = box.result else { return nil }
        return try result.get()
    }

    /// Runs `body` in a task of its own and returns its value, or `nil` when `duration` of
    /// `clock` passed first. Rethrows the body's error.
    ///
    /// - Parameter cancelsOnTimeout: whether the body's task is cancelled at the deadline (it is
    ///   never waited for); else it goes on in the background. A cancelled caller stops waiting at
    ///   once with `CancellationError`, and cancels the body.
    static func value<Value: Sendable>(
        within duration: Duration,
        clock: any CacheClock,
        cancelsOnTimeout: Bool,
        _ body: @escaping @Sendable () async throws -> Value
    ) async throws -> Value? {
        let box = ResultBox<Value>()
        let outcome = Outcome()
        let work = Task {
            do {
                box.store(.success(try await body()))
            } catch {
                box.store(.failure(error))
            }
            outcome.settle(true)
        }
        let timer = Task {
            guard (try? await clock.sleep(for: max(duration, .zero))) != nil else { return }
            outcome.settle(false)
        }
        let finished = await withTaskCancellationHandler {
            await outcome.value()
        } onCancel: {
            outcome.settle(false)
        }
        timer.cancel()
        if !finished {
            if Task.isCancelled {
                work.cancel()
                throw CancellationError()
            }
            if cancelsOnTimeout { work.cancel() }
            return nil
        }
        return try box.result?.get()
    }

    private final class ResultBox<Value: Sendable>: Sendable {
        private let stored = Mutex<Result<Value, any Error>?>(nil)
        func store(_ result: Result<Value, any Error>) { self.stored.withLock { $0 = result } }
        var result: Result<Value, any Error>? { self.stored.withLock { $0 } }
    }

    /// The first of two answers, for one waiter.
    private final class Outcome: Sendable {
        private struct State {
            var value: Bool?
            var waiter: CheckedContinuation<Bool, Never>?
        }

        private let state = Mutex(State())

        func settle(_ value: Bool) {
            let waiter = self.state.withLock { state -> CheckedContinuation<Bool, Never>? in
                guard state.value == nil else { return nil }
                state.value = value
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume(returning: value)
        }

        func value() async -> Bool {
            await withCheckedContinuation { continuation in
                let ready = self.state.withLock { state -> Bool? in
                    if let value = state.value { return value }
                    state.waiter = continuation
                    return nil
                }
                if let ready { continuation.resume(returning: ready) }
            }
        }
    }
}

/// Collects the first error of several steps run in a task.
final class ErrorBox: Sendable {
    private let stored = Mutex<(any Error)?>(nil)

    func record(_ error: any Error) {
        self.stored.withLock { if $0 == nil { $0 = error } }
    }

    var first: (any Error)? { self.stored.withLock { $0 } }
}
