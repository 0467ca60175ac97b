import Foundation
import Panza

/// Printing for humans and for `--json`.
enum Output {
    static func json(_ value: some Encodable) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        print(String(decoding: try encoder.encode(value), as: UTF8.self))
    }

    static func error(_ error: PanzaError) {
        var line = "panza: error: \(error.message)"
        if let path = error.path { line += " [\(path)]" }
        if let key = error.key { line += " [key \(key)]" }
        self.error(message: line, prefixed: true)
    }

    static func error(message: String, prefixed: Bool = false) {
        let line = prefixed ? message : "panza: error: \(message)"
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }

    /// `1536` → `1.5 KiB`.
    static func bytes(_ count: Int) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(count)
        var unit = 0
        while abs(value) >= 1024, unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(count) B" : String(format: "%.1f %@", value, units[unit])
    }

    /// A duration in the most readable unit.
    static func duration(_ duration: Duration) -> String {
        let seconds = Double(duration.components.seconds) + Double(duration.components.attoseconds) * 1e-18
        switch seconds {
        case ..<1e-3: return String(format: "%.1f µs", seconds * 1e6)
        case ..<1: return String(format: "%.1f ms", seconds * 1e3)
        default: return String(format: "%.2f s", seconds)
        }
    }

    /// Milliseconds since 1970 as an ISO 8601 date.
    static func date(_ milliseconds: Int64) -> String {
        Date(timeIntervalSince1970: Double(milliseconds) / 1000).formatted(.iso8601)
    }

    /// `fresh`, `stale` or `expired` now, for an entry that expires at `expiresAt` (`nil`: never)
    /// and is kept until `staleUntil` (`nil`: no stale period).
    static func freshness(expiresAt: Int64?, staleUntil: Int64?) -> String {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        guard let expiresAt, now >= expiresAt else { return "fresh" }
        if let staleUntil, now < staleUntil { return "stale" }
        return "expired"
    }

    /// Pads columns to their widest cell.
    static func table(_ rows: [[String]]) {
        guard let first = rows.first else { return }
        var widths = Array(repeating: 0, count: first.count)
        for row in rows {
            for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) }
        }
        for row in rows {
            let cells = row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }
            print(cells.joined(separator: "  "))
        }
    }
}
