public import Foundation

/// A folder under the system's temporary directory, removed when the test is done with it.
public final class TemporaryDirectory {
    public let url: URL

    public init() throws {
        self.url = FileManager.default.temporaryDirectory
            .appendingPathComponent("panza-tests-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: self.url, withIntermediateDirectories: true)
    }

    deinit {
        try? FileManager.default.removeItem(at: self.url)
    }

    public func path(_ name: String) -> String {
        self.url.appendingPathComponent(name).path
    }
}
