import Foundation

/// Turns values into envelope payloads and back.
///
/// `Data` and `[UInt8]` are stored as raw bytes and `String` as UTF-8, so that the common
/// "cache this response body" case pays no JSON cost; every other `Codable` value is JSON
/// (keys sorted), which keeps stored entries readable with `panza get`.
enum ValueCoding {
    static func encode<Value: Encodable>(_ value: Value) throws -> (BlobEnvelope.ContentType, [UInt8]) {
        if let data = value as? Data { return (.bytes, Array(data)) }
        if let bytes = value as? [UInt8] { return (.bytes, bytes) }
        if let text = value as? String { return (.text, Array(text.utf8)) }
        do {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            return (.json, Array(try encoder.encode(value)))
        } catch {
            throw PanzaError(
                code: .encodingFailed,
                message: "\(Value.self) could not be encoded as JSON",
                underlying: error
            )
        }
    }

    static func decode<Value: Decodable>(
        _ type: Value.Type,
        from envelope: BlobEnvelope,
        key: String
    ) throws -> Value {
        switch envelope.contentType {
        case .bytes:
            if Value.self == Data.self { return Data(envelope.payload) as! Value }
            if Value.self == [UInt8].self { return envelope.payload as! Value }
        case .text:
            if Value.self == String.self { return String(decoding: envelope.payload, as: UTF8.self) as! Value }
        case .json:
            do {
                return try JSONDecoder().decode(Value.self, from: Data(envelope.payload))
            } catch {
                throw PanzaError(
                    code: .decodingFailed,
                    message: "stored JSON does not decode as \(Value.self)",
                    key: key,
                    underlying: error
                )
            }
        }
        throw PanzaError(
            code: .decodingFailed,
            message: "stored \(envelope.contentType) value cannot be read as \(Value.self)",
            key: key
        )
    }
}
