import Dispatch

/// A serial executor that runs an actor's jobs on a private dispatch queue.
///
/// SQLite calls block: on disk I/O, on `fsync`, and for up to the busy timeout when another
/// process holds the write lock. Running them on the cooperative thread pool would stall every
/// task of the process, so the SQLite tier's actor runs on a thread of its own instead
/// (the approach of GRDB's `DispatchQueueActor`; Linux has no `DispatchSerialQueue` executor).
final class DispatchQueueExecutor: SerialExecutor {
    private let queue: DispatchQueue

    init(label: String) {
        self.queue = DispatchQueue(label: label)
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = self.asUnownedSerialExecutor()
        self.queue.async {
            job.runSynchronously(on: executor)
        }
    }

    /// Runs a plain block on the queue, in order with the jobs.
    func enqueueBlock(_ block: @escaping @Sendable () -> Void) {
        self.queue.async(execute: block)
    }

    func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }
}
