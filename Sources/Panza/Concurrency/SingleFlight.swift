import Synchronization

/// Runs one lookup-then-load per key at a time and hands its result to every caller that asked
/// meanwhile.
///
/// The first caller of a key leads. It runs the `lookup` (the tiers below memory) itself, inline,
/// so that a hit costs no extra task. On a miss it starts the `load` in a task of its own, so that
/// the load belongs to no one caller, and then waits for it like everyone else. A caller that is
/// cancelled stops waiting at once with `CancellationError`; the load goes on for the others, and
/// its result is still stored by the load itself, so a call already paid for is never thrown away.
/// A leader cancelled during its lookup stops at once too, and its followers start over.
/// Errors reach every waiter and are not remembered: the next call after a failure starts anew.
///
/// A write of the key (a `set`, a removal, a bust of its namespace or of everything) *detaches*
/// the key's flight (``detach(_:)``): callers that come after it start a new flight, while the
/// callers already waiting get the old flight's result (whose store the version fence refuses).
/// A flight carries a generation, and only the leader of that generation finishes it, whether
/// it is still the key's flight or detached (as foyer's in-flight map hands waiters only to the
/// load whose id the entry still holds).
final class SingleFlight: Sendable {
    private struct Flight {
        let generation: UInt64
        let namespace: String
        var waiters: [UInt64: CheckedContinuation<any Sendable, any Error>] = [:]
    }

    private struct State {
        var flights: [String: Flight] = [:]
        /// Flights detached by a write of their key, by generation, until their leader finishes.
        var detached: [UInt64: Flight] = [:]
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
        namespace: String = "",
        onJoin: @Sendable () -> Void = {},
        lookup: () async throws -> Value?,
        load: @escaping @Sendable () async throws -> Value
    ) async throws -> Value {
        while true {
            try Task.checkCancellation()
            let leaderGeneration: UInt64? = self.state.withLock { state in
                if state.flights[key] != nil { return nil }
                let generation = state.makeID()
                state.flights[key] = Flight(generation: generation, namespace: namespace)
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
                // A leader cancelled during its lookup ends the flight for itself only: the
                // followers start over, one of them leading.
                let cancelled = error is CancellationError && Task.isCancelled
                self.finish(key: key, generation: generation, with: .failure(cancelled ? FlightEnded() : error))
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
                    if let flight = state.flights[key], generation == nil || flight.generation == generation {
                        if Task.isCancelled { return .cancelled }
                        state.flights[key]!.waiters[waiterID] = continuation
                        return .registered
                    }
                    if let generation, state.detached[generation] != nil {
                        // The leader's own flight, detached by a write before the leader waited.
                        if Task.isCancelled { return .cancelled }
                        state.detached[generation]!.waiters[waiterID] = continuation
                        return .registered
                    }
                    return .flightEnded
                }
                startLoad?()
                switch registration {
                case .registered: break
                case .cancelled: continuation.resume(throwing: CancellationError())
                case .flightEnded: continuation.resume(throwing: FlightEnded())
                }
            }
        } onCancel: {
            let continuation = self.state.withLock { state -> CheckedContinuation<any Sendable, any Error>? in
                if let waiter = state.flights[key]?.waiters.removeValue(forKey: waiterID) { return waiter }
                for generation in state.detached.keys {
                    if let waiter = state.detached[generation]!.waiters.removeValue(forKey: waiterID) { return waiter }
                }
                return nil
            }
            continuation?.resume(throwing: CancellationError())
        }
    }

    private func finish(key: String, generation: UInt64, with outcome: Result<any Sendable, any Error>) {
        let waiters = self.state.withLock { state -> [CheckedContinuation<any Sendable, any Error>] in
            if let flight = state.flights[key], flight.generation == generation {
                state.flights[key] = nil
                return Array(flight.waiters.values)
            }
            return state.detached.removeValue(forKey: generation).map { Array($0.waiters.values) } ?? []
        }
        for waiter in waiters {
            waiter.resume(with: outcome)
        }
    }

    /// Detaches the flights that `operation` concerns: its key's, its namespace's or all of them.
    /// Callers after this start new flights; those waiting get the detached flight's result.
    func detach(_ operation: CacheTierOperation) {
        self.state.withLock { state in
            guard !state.flights.isEmpty else { return }
            switch operation {
            case .store(let key, _, _), .remove(let key):
                if let flight = state.flights.removeValue(forKey: key.rawValue) {
                    state.detached[flight.generation] = flight
                }
            case .removeNamespace(let namespace):
                for (key, flight) in state.flights where flight.namespace == namespace {
                    state.flights[key] = nil
                    state.detached[flight.generation] = flight
                }
            case .removeAll:
                for flight in state.flights.values { state.detached[flight.generation] = flight }
                state.flights = [:]
            }
        }
    }

    /// How many flights are in progress, attached or detached (for tests of bounds).
    var flightCount: Int { self.state.withLock { $0.flights.count + $0.detached.count } }

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
