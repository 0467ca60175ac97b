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
