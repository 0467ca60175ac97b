import Foundation

/// Turns values into envelope payloads and back, choosing the stored form by the **declared**
/// type, never by the value's dynamic type.
///
/// `Data` and `[UInt8]` are stored as raw bytes and `String` as UTF-8, so that the common
/// "cache this response body" case pays no JSON cost; every other `Codable` value is JSON
/// (keys sorted), which keeps stored entries readable with `panza get`. Optionals, nested or
/// not, are stored as their innermost value; a `nil` is stored as content type `null` with the
/// number of Optional layers around it, so that `String?`, `Data??` and `nil` results round-trip
/// (Python panza caches `None`).
enum ValueCoding {
    /// The envelope bytes of `value`, encoded straight from the value's own storage when it is
    /// `Data`, `[UInt8]` or a native `String` (no intermediate copy of a large value).
    ///
    /// - Throws: ``PanzaError/Code/encodingFailed``; ``PanzaError/Code/valueTooLarge`` when the
    ///   payload is longer than `maxPayloadBytes`, before the envelope is built.
    /// - Parameter pendingAbove: a payload longer than this is not encoded here but returned as a
    ///   ``PendingEnvelope`` that holds it as the value does, to be encoded frame by frame where it
    ///   is stored; `nil` to always encode.
    /// - Returns: the payload's length (what the memory tier is charged) and the stored form.
    static func storedForm<Value: Encodable>(
        of value: Value,
        createdAtMilliseconds: Int64,
        timeToLiveMilliseconds: Int64,
        staleForMilliseconds: Int64 = 0,
        compress: Bool,
        maxPayloadBytes: Int,
        pendingAbove: Int? = nil
    ) throws -> (payloadCount: Int, times: EntryTimes, form: StoredForm) {
        var pending = PendingEnvelope(
            payload: .bytes([]), contentType: .bytes, createdAtMilliseconds: createdAtMilliseconds,
            timeToLiveMilliseconds: timeToLiveMilliseconds, staleForMilliseconds: staleForMilliseconds,
            compress: compress)
        if Value.self == Data.self {
            pending.payload = .data(value as! Data)
        } else if Value.self == [UInt8].self {
            pending.payload = .bytes(value as! [UInt8])
        } else if Value.self == String.self {
            pending.payload = .text(value as! String)
            pending.contentType = .text
        } else {
            let (contentType, payload) = try self.encode(value)
            pending.payload = .bytes(payload)
            pending.contentType = contentType
        }
        let count = pending.payloadCount
        guard count <= maxPayloadBytes else {
            throw PanzaError(
                code: .valueTooLarge,
                message: "the value encodes to \(count) bytes, more than maxValueBytes (\(maxPayloadBytes))"
            )
        }
        if let pendingAbove, count > pendingAbove {
            return (count, pending.times, .pending(pending))
        }
        return (count, pending.times, .blob(pending.encoded()))
    }

    /// How a value goes to the tiers: its envelope, or the value itself to be encoded where it is
    /// stored (large values).
    enum StoredForm {
        case blob([UInt8])
        case pending(PendingEnvelope)
    }

    static func encode<Value: Encodable>(_ value: Value) throws -> (BlobEnvelope.ContentType, [UInt8]) {
        if Value.self == Data.self { return (.bytes, Array(value as! Data)) }
        if Value.self == [UInt8].self { return (.bytes, value as! [UInt8]) }
        if Value.self == String.self { return (.text, Array((value as! String).utf8)) }
        guard Value.self is any OptionalRepresentable.Type else { return try self.json(value, as: Value.self) }
        // Peel the Optional layers of the declared type.
        var type: Any.Type = Value.self
        var current: Any = value
        var depth = 0
        while let optionalType = type as? any OptionalRepresentable.Type {
            guard let inner = Self.unwrap(current) else { return (.null, [UInt8(min(depth, 255))]) }
            current = inner
            type = optionalType.wrappedType
            depth += 1
        }
        if type == Data.self { return (.bytes, Array(current as! Data)) }
        if type == [UInt8].self { return (.bytes, current as! [UInt8]) }
        if type == String.self { return (.text, Array((current as! String).utf8)) }
        guard let encodable = current as? any Encodable else {
            throw PanzaError(code: .encodingFailed, message: "\(type) is not Encodable")
        }
        return try self.json(encodable, as: Value.self)
    }

    static func decode<Value: Decodable>(
        _ type: Value.Type,
        from envelope: BlobEnvelope,
        key: String
    ) throws -> Value {
        try self.decode(type, contentType: envelope.contentType, payload: .bytes(envelope.payload), key: key)
    }

    static func decode<Value: Decodable>(
        _ type: Value.Type,
        from envelope: DecodedEnvelope,
        key: String
    ) throws -> Value {
        try self.decode(type, contentType: envelope.contentType, payload: envelope.payload, key: key)
    }

    /// Decodes `payload`, stored as `contentType`, as the declared type `Value`. A `Data` result
    /// takes a ``DecodedEnvelope/Payload/data(_:)`` payload as it is, without a copy.
    static func decode<Value: Decodable>(
        _ type: Value.Type,
        contentType: BlobEnvelope.ContentType,
        payload: DecodedEnvelope.Payload,
        key: String
    ) throws -> Value {
        // The common result types first, by identity: no conformance check, no cast through `Any`.
        if Value.self == String.self, contentType == .text {
            let text: String
            switch payload {
            case .bytes(let bytes): text = String(decoding: bytes, as: UTF8.self)
            case .data(let data): text = String(decoding: data, as: UTF8.self)
            }
            return unsafeBitCast(text, to: Value.self)
        }
        if Value.self == Data.self, contentType == .bytes { return unsafeBitCast(payload.data, to: Value.self) }
        if Value.self == [UInt8].self, contentType == .bytes { return unsafeBitCast(payload.array, to: Value.self) }
        if !(Value.self is any OptionalRepresentable.Type), contentType != .null {
            return try self.decodeInnermost(Value.self, contentType: contentType, payload: payload, key: key) as! Value
        }
        var layers: [any OptionalRepresentable.Type] = []
        var inner: Any.Type = Value.self
        while let optionalType = inner as? any OptionalRepresentable.Type {
            layers.append(optionalType)
            inner = optionalType.wrappedType
        }
        var depth: Int?
        if contentType == .null {
            let bytes = payload.array
            guard bytes.count == 1, Int(bytes[0]) < layers.count else {
                throw PanzaError(
                    code: .decodingFailed,
                    message: "a stored nil cannot be read as \(Value.self)",
                    key: key
                )
            }
            depth = Int(bytes[0])
        } else if contentType == .json, payload.count == 4, payload.array == Array("null".utf8) {
            depth = 0  // a nil stored before content type `none` existed
        }
        var result: Any
        var layer: Int
        if let depth {
            result = layers[depth].wrap(nil)
            layer = depth - 1
        } else {
            result = try self.decodeInnermost(inner, contentType: contentType, payload: payload, key: key)
            layer = layers.count - 1
        }
        while layer >= 0 {
            result = layers[layer].wrap(result)
            layer -= 1
        }
        return result as! Value
    }

    // MARK: Internals

    private static func decodeInnermost(
        _ type: Any.Type, contentType: BlobEnvelope.ContentType, payload: DecodedEnvelope.Payload, key: String
    ) throws -> Any {
        switch contentType {
        case .bytes:
            if type == Data.self { return payload.data }
            if type == [UInt8].self { return payload.array }
        case .text:
            if type == String.self {
                switch payload {
                case .bytes(let bytes): return String(decoding: bytes, as: UTF8.self)
                case .data(let data): return String(decoding: data, as: UTF8.self)
                }
            }
        case .json:
            if let decodable = type as? any Decodable.Type {
                do {
                    return try Self.decodeJSON(decodable, from: payload.data)
                } catch {
                    throw PanzaError(
                        code: .decodingFailed,
                        message: "stored JSON does not decode as \(type)",
                        key: key,
                        underlying: error
                    )
                }
            }
        case .null:
            break
        }
        throw PanzaError(
            code: .decodingFailed,
            message: "stored \(contentType) value cannot be read as \(type)",
            key: key
        )
    }

    private static func decodeJSON<Value: Decodable>(_ type: Value.Type, from payload: Data) throws -> Value {
        try JSONDecoder().decode(Value.self, from: payload)
    }

    private static func json(_ value: some Encodable, as declared: Any.Type) throws -> (
        BlobEnvelope.ContentType, [UInt8]
    ) {
        do {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            return (.json, Array(try encoder.encode(value)))
        } catch {
            throw PanzaError(
                code: .encodingFailed,
                message: "\(declared) could not be encoded as JSON",
                underlying: error
            )
        }
    }

    /// The payload of an `Optional` held in `value` (an `Any`), or `nil` for `.none`.
    private static func unwrap(_ value: Any) -> Any? {
        let mirror = Mirror(reflecting: value)
        guard mirror.displayStyle == .optional else { return value }
        return mirror.children.first?.value
    }
}

/// `Optional`, seen without its `Wrapped` type: how declared Optional layers are peeled and rebuilt.
protocol OptionalRepresentable {
    static var wrappedType: Any.Type { get }
    /// `.none` for `nil`, else `.some(value as! Wrapped)`.
    static func wrap(_ value: Any?) -> Any
}

extension Optional: OptionalRepresentable {
    static var wrappedType: Any.Type { Wrapped.self }

    static func wrap(_ value: Any?) -> Any {
        guard let value else { return Self.none as Any }
        return Self.some(value as! Wrapped) as Any
    }
}
