import Foundation

/// Files of the project's `Fixtures/` folder.
enum Fixtures {
    /// The package root, found from this source file.
    static let packageRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()  // Support
        .deletingLastPathComponent()  // PanzaTests
        .deletingLastPathComponent()  // Tests
        .deletingLastPathComponent()

    static func url(_ relativePath: String) -> URL {
        self.packageRoot.appendingPathComponent("Fixtures").appendingPathComponent(relativePath)
    }

    static func bytes(_ relativePath: String) throws -> [UInt8] {
        Array(try Data(contentsOf: self.url(relativePath)))
    }

    /// Set `PANZA_REGENERATE_FIXTURES=1` to rewrite golden files after a deliberate format change.
    static var regenerate: Bool { ProcessInfo.processInfo.environment["PANZA_REGENERATE_FIXTURES"] == "1" }
}
