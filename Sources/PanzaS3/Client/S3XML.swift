import Foundation

/// Reads the few fields Panza needs from S3's XML answers.
///
/// S3's answers are flat and machine-written; a scan for `<Tag>text</Tag>` is enough, with the
/// five XML entities decoded. Listing asks for `encoding-type=url`, so keys arrive percent-encoded
/// and never contain markup.
enum S3XML {
    /// The texts of every `<tag>…</tag>` in `xml`, in order.
    static func values(of tag: String, in xml: String) -> [String] {
        self.blocks(tag, in: xml).map(self.unescape)
    }

    /// The first `<tag>…</tag>` text, if any.
    static func value(of tag: String, in xml: String) -> String? {
        self.values(of: tag, in: xml).first
    }

    /// The raw inner text of every `<tag>…</tag>` block (for nested elements such as `<Contents>`).
    static func blocks(_ tag: String, in xml: String) -> [String] {
        var results: [String] = []
        let open = "<\(tag)>"
        let close = "</\(tag)>"
        var searchStart = xml.startIndex
        while let openRange = xml.range(of: open, range: searchStart..<xml.endIndex),
            let closeRange = xml.range(of: close, range: openRange.upperBound..<xml.endIndex)
        {
            results.append(String(xml[openRange.upperBound..<closeRange.lowerBound]))
            searchStart = closeRange.upperBound
        }
        return results
    }

    static func unescape(_ text: String) -> String {
        guard text.contains("&") else { return text }
        return
            text
            .replacingOccurrences(of: "&lt;", with: "<")
            .replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&quot;", with: "\"")
            .replacingOccurrences(of: "&apos;", with: "'")
            .replacingOccurrences(of: "&amp;", with: "&")
    }

    static func escape(_ text: String) -> String {
        text
            .replacingOccurrences(of: "&", with: "&amp;")
            .replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;")
            .replacingOccurrences(of: "\"", with: "&quot;")
            .replacingOccurrences(of: "'", with: "&apos;")
    }
}
