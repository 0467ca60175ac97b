package import Logging

extension Logger {
    /// The logger used when the caller gives none: it drops everything. Panza never creates a
    /// logger that writes anywhere; pass yours to see what it does.
    package static let panzaDisabled = Logger(label: "panza", factory: { _ in SwiftLogNoOpLogHandler() })
}
