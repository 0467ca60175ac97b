import Synchronization

/// The continuation of one waiting task, which either the grantor or the cancellation handler
/// resumes, whichever comes first; the other finds it taken.
final class WaiterSlot: Sendable {
    private enum State {
        case empty
        case waiting(CheckedContinuation<Void, any Error>)
        case cancelled
        case granted
    }

    private let state = Mutex(State.empty)

    /// Parks `continuation`; resumes it at once when the grant or the cancellation came first
    /// (a grantor may run between the waiter's registration and its park).
    func park(_ continuation: CheckedContinuation<Void, any Error>) {
        enum Outcome { case parked, granted, cancelled }
        let outcome = self.state.withLock { state -> Outcome in
            switch state {
            case .empty:
                state = .waiting(continuation)
                return .parked
            case .granted:
                return .granted
            case .cancelled:
                return .cancelled
            case .waiting:
                preconditionFailure("a waiter slot is parked once")
            }
        }
        switch outcome {
        case .parked: break
        case .granted: continuation.resume()
        case .cancelled: continuation.resume(throwing: CancellationError())
        }
    }

    /// Resumes the waiter normally. Returns `false` when it was already cancelled.
    func grant() -> Bool {
        let continuation = self.state.withLock { state -> CheckedContinuation<Void, any Error>?? in
            switch state {
            case .waiting(let continuation):
                state = .granted
                return .some(continuation)
            case .empty:
                state = .granted
                return .some(nil)
            case .cancelled, .granted:
                return nil
            }
        }
        guard let continuation else { return false }
        continuation?.resume()
        return true
    }

    /// Resumes the waiter with `CancellationError`. Returns `false` when it was already granted.
    @discardableResult
    func cancel() -> Bool {
        let continuation = self.state.withLock { state -> CheckedContinuation<Void, any Error>?? in
            switch state {
            case .waiting(let continuation):
                state = .cancelled
                return .some(continuation)
            case .empty:
                state = .cancelled
                return .some(nil)
            case .cancelled, .granted:
                return nil
            }
        }
        guard let continuation else { return false }
        continuation?.resume(throwing: CancellationError())
        return true
    }

    var isCancelled: Bool {
        self.state.withLock { if case .cancelled = $0 { true } else { false } }
    }
}
