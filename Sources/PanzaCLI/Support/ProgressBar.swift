import Foundation

/// A one-line progress bar on standard error, drawn only when standard error is a terminal.
final class ProgressBar: Sendable {
    private let total: Int
    private let label: String
    private let enabled: Bool

    init(total: Int, label: String, enabled: Bool = true) {
        self.total = total
        self.label = label
        self.enabled = enabled && isatty(STDERR_FILENO) == 1 && total > 0
    }

    func update(_ done: Int) {
        guard self.enabled else { return }
        // Called from several tasks; a line drawn twice is harmless.
        let width = 30
        let filled = self.total == 0 ? width : width * min(done, self.total) / self.total
        let bar = String(repeating: "█", count: filled) + String(repeating: "░", count: width - filled)
        FileHandle.standardError.write(Data("\r\(self.label) \(bar) \(done)/\(self.total)".utf8))
    }

    func finish() {
        guard self.enabled else { return }
        FileHandle.standardError.write(Data("\n".utf8))
    }
}
