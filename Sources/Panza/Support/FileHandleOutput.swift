import Foundation

/// Writes diagnostics that the user asked for (such as `PRINT_CACHE_MISSES`).
enum FileHandleOutput {
    static func standardError(_ text: String) {
        FileHandle.standardError.write(Data(text.utf8))
    }
}
