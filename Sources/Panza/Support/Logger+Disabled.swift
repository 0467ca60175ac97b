import Logging

extension Logger {
    /// The logger used when the caller gives none: it drops everything. Panza never creates a
    /// logger that writes anywhere; pass yours to see what it does.
    static let panzaDisabled = Logger(label: "panza", factory: { _ in SwiftLogNoOpLogHandler() })
}
