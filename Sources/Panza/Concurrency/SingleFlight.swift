import Synchronization

private enum FlightRole {
    case cancelled
    case leader(generation: UInt64)
    case follower
}

/// Runs one operation per key at a time and hands its result to every caller that asked meanwhile.
///
/// The first caller of a key leads: it starts the operation in a task of its own, so that the
/// operation does not belong to any one caller. Every caller, the leader included, then waits for
/// the result. A caller that is cancelled stops waiting at once with `CancellationError`; the
/// operation goes on for the others, and its result is still stored by the operation itself, so a
/// call already paid for is never thrown away. Errors reach every waiter and are not remembered:
/// the next call after a failure starts a new operation.
final class SingleFlight: Sendable {
    private struct Flight {
        let generation: UInt64
        var waiters: [UInt64: CheckedContinuation<any Sendable, any Error>]
    }

    private struct State {
        var flights: [String: Flight] = [:]
        var nextID: UInt64 = 0

        mutating func makeID() -> UInt64 {
            self.nextID &+= 1
            return self.nextID
        }
    }

    private let state = Mutex(State())

    /// Runs `operation` for `key` unless it is already running, and returns its result.
    ///
    /// - Parameter onJoin: called (outside the lock) when this caller joins a flight in progress.
    func run<Value: Sendable>(
        key: String,
        onJoin: @Sendable () -> Void = {},
        operation: @escaping @Sendable () async throws -> Value
    ) async throws -> Value {
        let waiterID = self.state.withLock { $0.makeID() }
        let result = try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<any Sendable, any Error>) in
                let role: FlightRole = self.state.withLock { state in
                    if Task.isCancelled { return .cancelled }
                    if state.flights[key] != nil {
                        state.flights[key]!.waiters[waiterID] = continuation
                        return .follower
                    }
                    let generation = state.makeID()
                    state.flights[key] = Flight(generation: generation, waiters: [waiterID: continuation])
                    return .leader(generation: generation)
                }
                switch role {
                case .cancelled:
                    continuation.resume(throwing: CancellationError())
                case .follower:
                    onJoin()
                case .leader(let generation):
                    Task {
                        let outcome: Result<any Sendable, any Error>
                        do {
                            outcome = .success(try await operation())
                        } catch {
                            outcome = .failure(error)
                        }
                        self.finish(key: key, generation: generation, with: outcome)
                    }
                }
            }
        } onCancel: {
            let continuation = self.state.withLock { state in
                state.flights[key]?.waiters.removeValue(forKey: waiterID)
            }
            continuation?.resume(throwing: CancellationError())
        }
        guard let value = result as? Value else {
            throw PanzaError(
                code: .typeMismatch,
                message: "a call in flight for this key produces \(type(of: result)), not \(Value.self)",
                key: key
            )
        }
        return value
    }

    /// How many keys have an operation in flight.
    var inFlightCount: Int { self.state.withLock { $0.flights.count } }

    private func finish(key: String, generation: UInt64, with outcome: Result<any Sendable, any Error>) {
        let waiters = self.state.withLock { state -> [CheckedContinuation<any Sendable, any Error>] in
            guard let flight = state.flights[key], flight.generation == generation else { return [] }
            state.flights[key] = nil
            return Array(flight.waiters.values)
        }
        for waiter in waiters {
            waiter.resume(with: outcome)
        }
    }
}
