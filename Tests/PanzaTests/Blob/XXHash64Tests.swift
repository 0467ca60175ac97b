import PanzaTestSupport
import Testing

@testable import Panza

/// Reference digests computed with the `xxhash` package for Python (`xxhash.xxh64(data, seed=0)`).
struct XXHash64Tests {
    static let vectors: [(input: [UInt8], digest: UInt64)] = [
        ([], 0xEF46_DB37_51D8_E999),
        (Array("a".utf8), 0xD24E_C4F1_A98C_6E5B),
        (Array("abc".utf8), 0x44BC_2CF5_AD77_0999),
        (Array("0123456789abcdef0123456789abcdef".utf8), 0x642A_9495_8E71_E6C5),
        (Array((0..<4).flatMap { _ in (0...255).map(UInt8.init) }) + Array("xyz".utf8), 0xE146_CB31_B65B_C21A),
        (Array("Nobody inspects the spammish repetition".utf8), 0xFBCE_A83C_8A37_8BF1),
    ]

    @Test("XXH64 matches the reference implementation", arguments: 0..<vectors.count)
    func matchesReference(index: Int) {
        let vector = Self.vectors[index]
        #expect(XXHash64.hash(vector.input) == vector.digest)
    }
}

extension XXHash64Tests {
    /// Hashing while copying a range out (how an envelope's raw frame is verified and read in one
    /// pass) gives the digest of plain hashing, and copies exactly the range: ranges aligned and
    /// not aligned to the 32-byte stripes, shorter than a stripe, empty, and at both ends.
    @Test("Hashing while copying a range gives the same digest and copies the range exactly")
    func hashWhileCopying() {
        var generator = SplitMix64(seed: 0x5EED)
        for count in [0, 1, 31, 32, 33, 63, 64, 65, 100, 1000, 4096 + 52 + 8] {
            let bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
            var ranges: [Range<Int>] = [0..<count, 0..<0, 0..<min(count, 5)]
            if count >= 64 { ranges += [52..<(count - 8), 32..<64, 33..<34, 31..<(count - 1), (count - 3)..<count] }
            for _ in 0..<20 {
                let lower = Int.random(in: 0...count, using: &generator)
                ranges.append(lower..<Int.random(in: lower...count, using: &generator))
            }
            let expected = XXHash64.hash(bytes)
            for range in ranges {
                var copied = [UInt8](repeating: 0xAA, count: range.count + 2)
                let digest = bytes.withUnsafeBytes { raw in
                    copied.withUnsafeMutableBytes { target in
                        XXHash64.hash(raw, copying: range, to: target.baseAddress! + 1)
                    }
                }
                #expect(digest == expected, "count \(count), range \(range)")
                #expect(Array(copied[1..<(range.count + 1)]) == Array(bytes[range]), "count \(count), range \(range)")
                #expect(copied.first == 0xAA && copied.last == 0xAA, "wrote outside the range: \(count), \(range)")
            }
        }
    }
}
