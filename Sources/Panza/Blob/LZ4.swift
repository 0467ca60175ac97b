import CPanzaLZ4

/// The LZ4 block codec of the system liblz4.
///
/// This file is the only place that calls liblz4. Every call is bounds-checked on the Swift side
/// first: liblz4 takes `Int32` sizes and trusts its callers with buffer capacities.
enum LZ4 {
    /// The largest input liblz4 accepts (`LZ4_MAX_INPUT_SIZE`).
    static let maximumInputSize = 0x7E00_0000

    /// Compresses `input`, or returns `nil` when compression would not make it smaller.
    static func compress(_ input: UnsafeRawBufferPointer) -> [UInt8]? {
        guard input.count > 0, input.count <= maximumInputSize else { return nil }
        let bound = Int(LZ4_compressBound(Int32(input.count)))
        guard bound > 0 else { return nil }
        var written: Int32 = 0
        let output = [UInt8](unsafeUninitializedCapacity: bound) { buffer, initialized in
            written = LZ4_compress_default(
                input.baseAddress!.assumingMemoryBound(to: CChar.self),
                UnsafeMutableRawPointer(buffer.baseAddress!).assumingMemoryBound(to: CChar.self),
                Int32(input.count),
                Int32(bound)
            )
            initialized = max(Int(written), 0)
        }
        guard written > 0, Int(written) < input.count else { return nil }
        return output
    }

    /// Decompresses `input` into exactly `originalSize` bytes.
    ///
    /// - Returns: `nil` when the input is malformed or does not decompress to `originalSize` bytes.
    static func decompress(_ input: UnsafeRawBufferPointer, originalSize: Int) -> [UInt8]? {
        guard originalSize >= 0, originalSize <= maximumInputSize, input.count > 0, input.count <= Int(Int32.max)
        else { return nil }
        if originalSize == 0 { return nil }
        var result: Int32 = -1
        let output = [UInt8](unsafeUninitializedCapacity: originalSize) { buffer, initialized in
            result = LZ4_decompress_safe(
                input.baseAddress!.assumingMemoryBound(to: CChar.self),
                UnsafeMutableRawPointer(buffer.baseAddress!).assumingMemoryBound(to: CChar.self),
                Int32(input.count),
                Int32(originalSize)
            )
            initialized = result == Int32(originalSize) ? originalSize : 0
        }
        return result == Int32(originalSize) ? output : nil
    }
}

extension LZ4 {
    /// The most bytes LZ4 can turn `count` input bytes into (`LZ4_compressBound`), or `nil` when
    /// liblz4 does not take inputs that long.
    static func compressBound(_ count: Int) -> Int? {
        guard count >= 0, count <= maximumInputSize else { return nil }
        return Int(LZ4_compressBound(Int32(count)))
    }

    /// Compresses `input` into `output`.
    ///
    /// - Returns: the bytes written, or `nil` when compression fails or would not make the input
    ///   smaller (the caller stores it raw then).
    static func compress(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) -> Int? {
        guard input.count > 0, input.count <= maximumInputSize, output.count > 0 else { return nil }
        let written = LZ4_compress_default(
            input.baseAddress!.assumingMemoryBound(to: CChar.self),
            output.baseAddress!.assumingMemoryBound(to: CChar.self),
            Int32(input.count),
            Int32(min(output.count, Int(Int32.max)))
        )
        guard written > 0, Int(written) < input.count else { return nil }
        return Int(written)
    }

    /// Decompresses `input` into exactly all of `output`.
    ///
    /// - Returns: `false` when the input is malformed or does not decompress to `output.count` bytes.
    static func decompress(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) -> Bool {
        guard output.count > 0, output.count <= maximumInputSize, input.count > 0, input.count <= Int(Int32.max)
        else { return false }
        let result = LZ4_decompress_safe(
            input.baseAddress!.assumingMemoryBound(to: CChar.self),
            output.baseAddress!.assumingMemoryBound(to: CChar.self),
            Int32(input.count),
            Int32(output.count)
        )
        return result == Int32(output.count)
    }
}
