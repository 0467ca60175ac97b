import Foundation

/// Draws the results of a matrix as an SVG: hit ratio, and p50/p99 latency, against memory size, one
/// line per SQLite/S3 setting. Plain SVG, so any browser opens it.
enum BenchChart {
    static func svg(results: [BenchResult], title: String) -> String {
        let memorySizes = Array(Set(results.map { $0.setup.memoryBytes ?? 0 })).sorted()
        let seriesKeys = Array(Set(results.map { SeriesKey(sqliteBytes: $0.setup.sqliteBytes, s3: $0.setup.s3) }))
            .sorted()
        let colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
        let panelWidth = 420.0
        let panelHeight = 260.0
        let left = 70.0
        let top = 60.0
        let gap = 110.0
        var svg = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(left * 2 + panelWidth * 2 + gap))" height="\(Int(top + panelHeight + 130))" font-family="Helvetica, Arial, sans-serif" font-size="12">
            <rect width="100%" height="100%" fill="white"/>
            <text x="\(left)" y="28" font-size="16" font-weight="bold">\(escape(title))</text>

            """
        func x(_ index: Int, panel: Int) -> Double {
            let origin = left + Double(panel) * (panelWidth + gap)
            return memorySizes.count == 1
                ? origin + panelWidth / 2 : origin + panelWidth * Double(index) / Double(memorySizes.count - 1)
        }
        let latencies = results.flatMap { [$0.p50Microseconds, $0.p99Microseconds] }.filter { $0 > 0 }
        let minLog = floor(log10(latencies.min() ?? 1))
        let maxLog = max(minLog + 1, ceil(log10(latencies.max() ?? 10)))
        func yHit(_ ratio: Double) -> Double { top + panelHeight * (1 - ratio) }
        func yLatency(_ micros: Double) -> Double {
            top + panelHeight * (1 - (log10(max(micros, 1)) - minLog) / (maxLog - minLog))
        }
        for panel in 0..<2 {
            let origin = left + Double(panel) * (panelWidth + gap)
            svg +=
                "<rect x=\"\(origin)\" y=\"\(top)\" width=\"\(panelWidth)\" height=\"\(panelHeight)\" fill=\"none\" stroke=\"#999\"/>\n"
            svg +=
                "<text x=\"\(origin)\" y=\"\(top - 10)\" font-weight=\"bold\">\(panel == 0 ? "Hit ratio" : "Latency, µs (log scale; solid p50, dashed p99)")</text>\n"
            for (index, size) in memorySizes.enumerated() {
                let label = size == 0 ? "no memory" : Output.bytes(size)
                svg +=
                    "<text x=\"\(x(index, panel: panel))\" y=\"\(top + panelHeight + 18)\" text-anchor=\"middle\">\(label)</text>\n"
            }
            svg +=
                "<text x=\"\(origin + panelWidth / 2)\" y=\"\(top + panelHeight + 38)\" text-anchor=\"middle\">memory tier size</text>\n"
        }
        for tick in stride(from: 0.0, through: 1.0, by: 0.25) {
            svg +=
                "<line x1=\"\(left)\" x2=\"\(left + panelWidth)\" y1=\"\(yHit(tick))\" y2=\"\(yHit(tick))\" stroke=\"#eee\"/>"
            svg += "<text x=\"\(left - 8)\" y=\"\(yHit(tick) + 4)\" text-anchor=\"end\">\(Int(tick * 100))%</text>\n"
        }
        let latencyOrigin = left + panelWidth + gap
        for exponent in Int(minLog)...Int(maxLog) {
            let y = yLatency(pow(10, Double(exponent)))
            svg +=
                "<line x1=\"\(latencyOrigin)\" x2=\"\(latencyOrigin + panelWidth)\" y1=\"\(y)\" y2=\"\(y)\" stroke=\"#eee\"/>"
            svg +=
                "<text x=\"\(latencyOrigin - 8)\" y=\"\(y + 4)\" text-anchor=\"end\">\(Self.power(exponent))</text>\n"
        }
        for (seriesIndex, key) in seriesKeys.enumerated() {
            let color = colors[seriesIndex % colors.count]
            let points = memorySizes.enumerated().compactMap { index, size -> (Int, BenchResult)? in
                results.first {
                    ($0.setup.memoryBytes ?? 0) == size
                        && SeriesKey(sqliteBytes: $0.setup.sqliteBytes, s3: $0.setup.s3) == key
                }
                .map { (index, $0) }
            }
            func polyline(_ coordinates: [(Double, Double)], dashed: Bool = false) -> String {
                let list = coordinates.map { "\(String(format: "%.1f", $0.0)),\(String(format: "%.1f", $0.1))" }.joined(
                    separator: " ")
                return
                    "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\"\(dashed ? " stroke-dasharray=\"5,4\"" : "") points=\"\(list)\"/>\n"
            }
            svg += polyline(points.map { (x($0.0, panel: 0), yHit($0.1.hitRatio)) })
            svg += polyline(points.map { (x($0.0, panel: 1), yLatency($0.1.p50Microseconds)) })
            svg += polyline(points.map { (x($0.0, panel: 1), yLatency($0.1.p99Microseconds)) }, dashed: true)
            for point in points {
                svg +=
                    "<circle cx=\"\(x(point.0, panel: 0))\" cy=\"\(yHit(point.1.hitRatio))\" r=\"3\" fill=\"\(color)\"/>"
            }
            let legendY = top + panelHeight + 62 + Double(seriesIndex) * 16
            svg += "<rect x=\"\(left)\" y=\"\(legendY - 9)\" width=\"14\" height=\"4\" fill=\"\(color)\"/>"
            svg += "<text x=\"\(left + 20)\" y=\"\(legendY)\">\(escape(key.label))</text>\n"
        }
        return svg + "</svg>\n"
    }

    struct SeriesKey: Hashable, Comparable {
        var sqliteBytes: Int?
        var s3: Bool
        var label: String {
            (self.sqliteBytes.map { "SQLite \(Output.bytes($0))" } ?? "no SQLite") + (self.s3 ? " + S3" : "")
        }
        static func < (lhs: SeriesKey, rhs: SeriesKey) -> Bool {
            ((lhs.sqliteBytes ?? -1), lhs.s3 ? 1 : 0) < ((rhs.sqliteBytes ?? -1), rhs.s3 ? 1 : 0)
        }
    }

    private static func power(_ exponent: Int) -> String {
        exponent < 0
            ? "1e\(exponent)"
            : String(repeating: "0", count: exponent).isEmpty ? "1" : "1" + String(repeating: "0", count: exponent)
    }

    private static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
    }
}
