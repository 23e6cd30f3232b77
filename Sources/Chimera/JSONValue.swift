import Foundation

/// Any JSON value; family-specific `config` objects stay in this form until their family decodes them.
public enum JSONValue: Codable, Sendable, Equatable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let n = try? c.decode(Double.self) { self = .number(n) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case let .bool(b): try c.encode(b)
        case let .number(n):
            if n == n.rounded(), abs(n) < 1e15 { try c.encode(Int(n)) } else { try c.encode(n) }
        case let .string(s): try c.encode(s)
        case let .array(a): try c.encode(a)
        case let .object(o): try c.encode(o)
        }
    }

    public subscript(key: String) -> JSONValue? {
        if case let .object(o) = self { return o[key] }
        return nil
    }
    /// The number as an Int: nil for fractions and for numbers outside Int's range (1e20 is a whole
    /// number, but no Int).
    public var intValue: Int? { if case let .number(n) = self { return Int(exactly: n) }; return nil }
    public var doubleValue: Double? { if case let .number(n) = self { return n }; return nil }
    public var stringValue: String? { if case let .string(s) = self { return s }; return nil }

    /// The JSON path ("layers", "grid[1]") of the first value, depth first in key order, that
    /// `matches`, and that value.
    func first(where matches: (JSONValue) -> Bool) -> (path: String, value: JSONValue)? {
        if matches(self) { return ("", self) }
        func joined(_ head: String, _ tail: String) -> String { tail.isEmpty ? head : tail.hasPrefix("[") ? head + tail : head + "." + tail }
        switch self {
        case let .array(items):
            for (i, item) in items.enumerated() { if let hit = item.first(where: matches) { return (joined("[\(i)]", hit.path), hit.value) } }
        case let .object(fields):
            for key in fields.keys.sorted() { if let hit = fields[key]!.first(where: matches) { return (joined(key, hit.path), hit.value) } }
        default: break
        }
        return nil
    }
}

/// Coding key for any string, used to find keys that a type does not know.
struct AnyCodingKey: CodingKey {
    var stringValue: String
    var intValue: Int?
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { self.stringValue = "\(intValue)"; self.intValue = intValue }
}

extension Decoder {
    /// Throws for any key of the current object that `Keys` does not list: a misspelt field must
    /// not be silently ignored.
    public func rejectUnknownKeys<Keys: CodingKey & CaseIterable>(_ keys: Keys.Type) throws {
        let known = Set(Keys.allCases.map(\.stringValue))
        let container = try container(keyedBy: AnyCodingKey.self)
        for key in container.allKeys where !known.contains(key.stringValue) {
            throw DecodingError.dataCorrupted(.init(
                codingPath: codingPath + [key],
                debugDescription: "unknown field '\(key.stringValue)' (known: \(known.sorted().joined(separator: ", ")))"))
        }
    }
}

/// "inputs[0].connector" for a decoding path.
func jsonPath(_ path: [CodingKey]) -> String {
    var out = ""
    for key in path {
        if let i = key.intValue { out += "[\(i)]" } else { out += out.isEmpty ? key.stringValue : ".\(key.stringValue)" }
    }
    return out.isEmpty ? "(top level)" : out
}

/// A one-line description of a decoding error with its JSON path.
public func describe(_ error: DecodingError) -> String {
    switch error {
    case let .typeMismatch(type, context):
        return "\(jsonPath(context.codingPath)): expected \(readableType(type)); \(context.debugDescription)"
    case let .valueNotFound(type, context):
        return "\(jsonPath(context.codingPath)): expected \(readableType(type)), found null"
    case let .keyNotFound(key, context):
        return "\(jsonPath(context.codingPath + [key])): required field is missing"
    case let .dataCorrupted(context):
        if context.codingPath.isEmpty { return "not valid JSON: \(context.underlyingError.map { "\($0)" } ?? context.debugDescription)" }
        return "\(jsonPath(context.codingPath)): \(context.debugDescription)"
    @unknown default:
        return "\(error)"
    }
}

private func readableType(_ type: Any.Type) -> String {
    switch type {
    case is String.Type: return "a string"
    case is Int.Type: return "an integer"
    case is Double.Type, is Float.Type: return "a number"
    case is Bool.Type: return "true or false"
    default:
        let name = "\(type)"
        if name.hasPrefix("Array") { return "a list" }
        if name.hasPrefix("Dictionary") { return "an object" }
        return name
    }
}

/// As JSON text: what messages quote from a manifest or a plugin's description.
extension JSONValue: CustomStringConvertible {
    public var description: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "?"
    }
}
