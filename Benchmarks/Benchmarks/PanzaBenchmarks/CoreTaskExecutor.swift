import Dispatch
import Foundation
import Synchronization

/// A task executor with one thread per core, for the benchmarks that measure several tasks.
///
/// The benchmark harness waits for an async benchmark by blocking a thread of the cooperative pool
/// on a semaphore (its runner is itself async). On a 2-core machine that leaves the pool one
/// thread, and 8 tasks then run one at a time on one core whatever the code under test does.
/// Tasks that prefer this executor run on every core, as they do in an application.
final class CoreTaskExecutor: TaskExecutor, @unchecked Sendable {
    static let shared = CoreTaskExecutor(threads: ProcessInfo.processInfo.activeProcessorCount)

    private let jobs = Mutex<[UnownedJob]>([])
    private let available = DispatchSemaphore(value: 0)

    private init(threads: Int) {
        for index in 0..<threads {
            let thread = Thread { [unowned self] in self.work() }
            thread.name = "core-executor-\(index)"
            thread.start()
        }
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        self.jobs.withLock { $0.append(job) }
        self.available.signal()
    }

    private func work() {
        while true {
            self.available.wait()
            let job = self.jobs.withLock { $0.removeFirst() }
            job.runSynchronously(on: self.asUnownedTaskExecutor())
        }
    }
}
