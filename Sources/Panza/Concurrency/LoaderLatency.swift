import Synchronization

/// How long this cache's loads typically take: an exponentially weighted average of the last
/// successful loads. A remote tier that answers more slowly than that is slower than calling the
/// API directly (see ``CircuitBreaker/Configuration/skipsTiersSlowerThanLoads``).
final class LoaderLatency: Sendable {
    /// The weight of the newest load.
    static let weight = 0.2
    private let averageSeconds = Mutex<Double?>(nil)

    func record(_ duration: Duration) {
        let seconds = Double(duration.components.seconds) + Double(duration.components.attoseconds) * 1e-18
        self.averageSeconds.withLock { average in
            average = average.map { $0 + Self.weight * (seconds - $0) } ?? seconds
        }
    }

    /// The typical load time; `nil` before the first load.
    var typical: Duration? {
        self.averageSeconds.withLock { $0 }.map { Duration.seconds($0) }
    }
}
