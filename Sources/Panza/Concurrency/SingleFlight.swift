import Synchronization

/// Runs one lookup-then-load per key at a time and hands its result to every caller that asked
/// meanwhile.
///
/// The first caller of a key leads. It runs the `lookup` (the tiers below memory) itself, inline,
/// so that a hit costs no extra task. On a miss it starts the `load` in a task of its own, so that
/// the load belongs to no one caller, and then waits for it like everyone else. A caller that is
/// cancelled stops waiting at once with `CancellationError`; the load goes on for the others, and
/// its result is still stored by the load itself, so a call already paid for is never thrown away.
/// Errors reach every waiter and are not remembered: the next call after a failure starts anew.
final class SingleFlight: Sendable {
    private struct Flight {
        let generation: UInt64
        var waiters: [UInt64: CheckedContinuation<any Sendable, any Error>] = [:]
    }

    private struct State {
        var flights: [String: Flight] = [:]
        var nextID: UInt64 = 0

        mutating func makeID() -> UInt64 {
            self.nextID &+= 1
            return self.nextID
        }
    }

    /// The flight a follower wanted to join finished before it could; it starts over.
    private struct FlightEnded: Error {}

    private let state = Mutex(State())

    /// Returns the result of `lookup`, or else of `load`, sharing both with concurrent callers of `key`.
    ///
    /// - Parameters:
    ///   - onJoin: called when this caller joins a flight in progress instead of leading one.
    ///   - lookup: run by the leader in its own task; `nil` means a miss.
    ///   - load: run on a miss, in a new task.
    func run<Value: Sendable>(
        key: String,
        onJoin: @Sendable () -> Void = {},
        lookup: () async throws -> Value?,
        load: @escaping @Sendable () async throws -> Value
    ) async throws -> Value {
        while true {
            try Task.checkCancellation()
            let leaderGeneration: UInt64? = self.state.withLock { state in
                if state.flights[key] != nil { return nil }
                let generation = state.makeID()
                state.flights[key] = Flight(generation: generation)
                return generation
            }
            guard let generation = leaderGeneration else {
                do {
                    onJoin()
                    return try Self.cast(try await self.wait(key: key, generation: nil, startLoad: nil), key: key)
                } catch is FlightEnded {
                    continue
                }
            }
            // The leader: look up inline.
            let found: Value?
            do {
                found = try await lookup()
            } catch {
                self.finish(key: key, generation: generation, with: .failure(error))
                throw error
            }
            if let found {
                self.finish(key: key, generation: generation, with: .success(found))
                return found
            }
            let result = try await self.wait(key: key, generation: generation) {
                Task {
                    let outcome: Result<any Sendable, any Error>
                    do {
                        outcome = .success(try await load())
                    } catch {
                        outcome = .failure(error)
                    }
                    self.finish(key: key, generation: generation, with: outcome)
                }
            }
            return try Self.cast(result, key: key)
        }
    }

    /// Waits for the flight of `key` to finish.
    ///
    /// - Parameters:
    ///   - generation: the leader's flight; `nil` for a follower, which joins whatever flight exists.
    ///   - startLoad: started after the leader registered as a waiter, whether or not it was cancelled.
    /// - Throws: `FlightEnded` when a follower finds no flight; `CancellationError` when cancelled.
    private func wait(key: String, generation: UInt64?, startLoad: (() -> Void)?) async throws -> any Sendable {
        let waiterID = self.state.withLock { $0.makeID() }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<any Sendable, any Error>) in
                let registration: WaiterRegistration = self.state.withLock { state in
                    guard let flight = state.flights[key], generation == nil || flight.generation == generation else {
                        return .flightEnded
                    }
                    if Task.isCancelled { return .cancelled }
                    state.flights[key]!.waiters[waiterID] = continuation
                    return .registered
                }
                startLoad?()
                switch registration {
                case .registered: break
                case .cancelled: continuation.resume(throwing: CancellationError())
                case .flightEnded: continuation.resume(throwing: FlightEnded())
                }
            }
        } onCancel: {
            let continuation = self.state.withLock { state in
                state.flights[key]?.waiters.removeValue(forKey: waiterID)
            }
            continuation?.resume(throwing: CancellationError())
        }
    }

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

    private static func cast<Value>(_ result: any Sendable, key: String) throws -> Value {
        guard let value = result as? Value else {
            throw PanzaError(
                code: .typeMismatch,
                message: "a call in flight for this key produces \(type(of: result)), not \(Value.self)",
                key: key
            )
        }
        return value
    }
}

private enum WaiterRegistration {
    case registered
    case cancelled
    case flightEnded
}
