import Benchmark
import Foundation

/// Baselines measured by Python scripts in `Benchmarks/scripts/` (run with `PANZA_BENCH_PYTHON`,
/// the virtual environment `scripts/benchmark` prepares), each printing a rate on its last line.
enum PythonBaseline {
    /// The metric the rates are reported in.
    static func metric(_ unit: String) -> BenchmarkMetric {
        .custom(unit, polarity: .prefersLarger, useScalingFactor: false)
    }

    /// A benchmark configuration for one run of a script that reports `unit`.
    static func configuration(_ unit: String) -> Benchmark.Configuration {
        .init(
            metrics: [self.metric(unit)], scalingFactor: .one, maxDuration: .seconds(60), maxIterations: 1,
            thresholds: [self.metric(unit): tolerance])
    }

    /// Runs `script` with `arguments`; returns the number on its last line, or `nil` (printing why).
    static func run(_ script: String, _ arguments: [String]) -> Double? {
        let python = ProcessInfo.processInfo.environment["PANZA_BENCH_PYTHON"] ?? "python3"
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("scripts/\(script)").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [python, path] + arguments
        let output = Pipe()
        process.standardOutput = output
        do { try process.run() } catch {
            print("\(script) could not start: \(error)")
            return nil
        }
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self).split(separator: "\n").last.map(String.init) ?? ""
        guard process.terminationStatus == 0, let rate = Double(text) else {
            print("\(script) \(arguments.joined(separator: " ")) failed: \(text)")
            return nil
        }
        return rate
    }
}

/// Panza's peers on the SQLite-hit workload (issue 13), beside `sqlite.hit.memoized-call.*`:
///
///   baseline.python-panza.sqlite-hit.tasks-N.calls-per-second   Python panza 0.2.2, SQLiteCache
///   baseline.diskcache.memoize-hit.tasks-N.calls-per-second     python-diskcache 5.6.3, Cache.memoize
///
/// Same values (Workload.json), same 10,000 keys, same access order (Benchmarks/scripts/peers.py).
let peerBenchmarks: @Sendable () -> Void = {
    for (peer, name) in [("panza", "python-panza.sqlite-hit"), ("diskcache", "diskcache.memoize-hit")] {
        for tasks in [1, 8] {
            Benchmark(
                "baseline.\(name).tasks-\(tasks).calls-per-second",
                configuration: PythonBaseline.configuration("calls/s")
            ) { benchmark in
                guard let rate = PythonBaseline.run("peers.py", [peer, "\(tasks)", "5"]) else { return }
                benchmark.measurement(PythonBaseline.metric("calls/s"), Int(rate.rounded()))
            }
        }
    }
}
