import Foundation
import Synchronization

/// A compact record of a cache's accesses, for sizing tiers from real traffic
/// (`panza bench --trace FILE` replays it).
///
/// ```swift
/// configuration.trace = try AccessTrace(path: "accesses.pnzt")
/// ```
///
/// Each access is 24 bytes (format in `docs/trace-format.md`): when, the key's XXH64 hash (never the
/// key), the value's stored size, which tier served it (or that the loader ran), and how long it
/// took. Records are buffered and written 64 KiB at a time; ``close()`` writes the rest (the cache's
/// `close()` calls it).
public final class AccessTrace: Sendable {
    /// Who served an access.
    public enum Source: Hashable, Sendable, Codable {
        case memory
        /// The tier at this position below memory (0: SQLite when configured).
        case tier(Int)
        /// Nobody: the loader ran.
        case loader
        /// Nobody, and no loader was called (a `value(forKey:as:)` or `peek` miss).
        case miss

        var code: UInt8 {
            switch self {
            case .memory: 0
            case .tier(let index): UInt8(clamping: index + 1)
            case .loader: 254
            case .miss: 255
            }
        }

        init(code: UInt8) {
            switch code {
            case 0: self = .memory
            case 254: self = .loader
            case 255: self = .miss
            default: self = .tier(Int(code) - 1)
            }
        }
    }

    /// One access.
    public struct Record: Hashable, Sendable, Codable {
        /// Microseconds since the trace started.
        public var time: UInt64
        /// XXH64 of the key.
        public var keyHash: UInt64
        /// Stored (envelope) bytes of the value; 0 when unknown.
        public var size: UInt32
        /// Who served the access.
        public var source: Source
        /// Microseconds the access took, at most 16,777,215.
        public var latency: UInt32
    }

    static let magic: [UInt8] = Array("PNZT".utf8)
    static let version: UInt8 = 1
    static let headerSize = 16
    static let recordSize = 24
    private static let flushThreshold = 64 << 10

    private struct State {
        var buffer: [UInt8] = []
        var handle: FileHandle?
        var recorded = 0
    }

    /// Where the trace is written.
    public let path: String
    private let start = ContinuousClock.now
    private let state: Mutex<State>

    /// Creates (or truncates) the trace file at `path`.
    public init(path: String) throws {
        guard FileManager.default.createFile(atPath: path, contents: nil) else {
            throw PanzaError(code: .invalidConfiguration, message: "cannot create the trace file", path: path)
        }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        var header = Self.magic + [Self.version, 0, 0, 0]
        withUnsafeBytes(of: WallClock.nowMilliseconds().littleEndian) { header.append(contentsOf: $0) }
        try handle.write(contentsOf: header)
        self.path = path
        var state = State(handle: handle)
        state.buffer.reserveCapacity(Self.flushThreshold + Self.recordSize)
        self.state = Mutex(state)
    }

    /// Accesses recorded so far.
    public var count: Int { self.state.withLock { $0.recorded } }

    /// Records one access.
    func record(key: String, size: Int, source: Source, latency: Duration) {
        let time = UInt64(max(0, (ContinuousClock.now - self.start).wholeMicroseconds))
        let keyHash = XXHash64.hash(key.utf8)
        let micros = UInt32(min(Int64(0xFF_FFFF), latency.wholeMicroseconds))
        self.state.withLock { state in
            func append<T: FixedWidthInteger>(_ value: T) {
                withUnsafeBytes(of: value.littleEndian) { state.buffer.append(contentsOf: $0) }
            }
            append(time)
            append(keyHash)
            append(UInt32(clamping: size))
            append(micros << 8 | UInt32(source.code))
            state.recorded += 1
            if state.buffer.count >= Self.flushThreshold {
                try? state.handle?.write(contentsOf: state.buffer)
                state.buffer.removeAll(keepingCapacity: true)
            }
        }
    }

    /// Writes what is buffered and closes the file.
    public func close() throws {
        try self.state.withLock { state in
            guard let handle = state.handle else { return }
            try handle.write(contentsOf: state.buffer)
            state.buffer = []
            try handle.close()
            state.handle = nil
        }
    }

    /// Reads every record of the trace at `path`.
    ///
    /// - Throws: ``PanzaError/Code/unsupportedFormat`` for a file that is not a trace of this version.
    public static func read(path: String) throws -> [Record] {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        guard bytes.count >= headerSize, Array(bytes[0..<4]) == magic, bytes[4] == version else {
            throw PanzaError(
                code: .unsupportedFormat, message: "not a Panza access trace (version \(version))", path: path)
        }
        return bytes.withUnsafeBytes { raw in
            stride(from: headerSize, through: raw.count - recordSize, by: recordSize).map { offset in
                let packed = UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: offset + 20, as: UInt32.self))
                return Record(
                    time: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt64.self)),
                    keyHash: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self)),
                    size: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: offset + 16, as: UInt32.self)),
                    source: Source(code: UInt8(packed & 0xFF)),
                    latency: packed >> 8
                )
            }
        }
    }
}

extension Duration {
    var wholeMicroseconds: Int64 {
        let (seconds, attoseconds) = self.components
        return seconds &* 1_000_000 &+ attoseconds / 1_000_000_000_000
    }
}
