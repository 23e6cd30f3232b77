import Foundation

/// A parsed JSON value.
///
/// We parse tokenizer.json ourselves instead of using `JSONSerialization` because
/// Foundation returns `[String: Any]`, and Swift `String` keys compare by canonical
/// equivalence: a vocab holding both "é" (U+00E9) and "e\u{301}" would silently lose
/// one entry. Objects here keep every key, byte-exact and in file order.
enum JSONValue {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([(key: String, value: JSONValue)])

    var kindName: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .number: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }
}

/// A small recursive-descent JSON parser over UTF-8 bytes.
struct JSONParser {
    struct Failure: Error { let message: String }

    private let bytes: [UInt8]
    private var index = 0
    private var depth = 0

    static func parse(_ data: Data) throws(Failure) -> JSONValue {
        var parser = JSONParser(bytes: [UInt8](data))
        parser.skipWhitespace()
        let value = try parser.parseValue()
        parser.skipWhitespace()
        guard parser.index == parser.bytes.count else { throw parser.failure("unexpected trailing characters") }
        return value
    }

    private init(bytes: [UInt8]) { self.bytes = bytes }

    private func failure(_ message: String) -> Failure {
        Failure(message: "\(message) at byte offset \(index)")
    }

    private mutating func skipWhitespace() {
        while index < bytes.count, [0x20, 0x0A, 0x0D, 0x09].contains(bytes[index]) { index += 1 }
    }

    private mutating func expect(_ literal: String, _ value: JSONValue) throws(Failure) -> JSONValue {
        let utf8 = Array(literal.utf8)
        guard index + utf8.count <= bytes.count, Array(bytes[index..<index + utf8.count]) == utf8 else {
            throw failure("invalid literal")
        }
        index += utf8.count
        return value
    }

    private mutating func parseValue() throws(Failure) -> JSONValue {
        guard index < bytes.count else { throw failure("unexpected end of data") }
        switch bytes[index] {
        case UInt8(ascii: "{"): return try parseObject()
        case UInt8(ascii: "["): return try parseArray()
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): return try expect("true", .bool(true))
        case UInt8(ascii: "f"): return try expect("false", .bool(false))
        case UInt8(ascii: "n"): return try expect("null", .null)
        default: return try parseNumber()
        }
    }

    private mutating func enter() throws(Failure) {
        depth += 1
        // Bound recursion so a hostile file cannot overflow the stack.
        guard depth < 512 else { throw failure("nesting too deep") }
    }

    private mutating func parseObject() throws(Failure) -> JSONValue {
        try enter()
        defer { depth -= 1 }
        index += 1
        var members: [(key: String, value: JSONValue)] = []
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "}") { index += 1; return .object(members) }
        while true {
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { throw failure("expected a string key") }
            let key = try parseString()
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { throw failure("expected ':'") }
            index += 1
            skipWhitespace()
            members.append((key, try parseValue()))
            skipWhitespace()
            guard index < bytes.count else { throw failure("unterminated object") }
            if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
            if bytes[index] == UInt8(ascii: "}") { index += 1; return .object(members) }
            throw failure("expected ',' or '}'")
        }
    }

    private mutating func parseArray() throws(Failure) -> JSONValue {
        try enter()
        defer { depth -= 1 }
        index += 1
        var elements: [JSONValue] = []
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "]") { index += 1; return .array(elements) }
        while true {
            skipWhitespace()
            elements.append(try parseValue())
            skipWhitespace()
            guard index < bytes.count else { throw failure("unterminated array") }
            if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
            if bytes[index] == UInt8(ascii: "]") { index += 1; return .array(elements) }
            throw failure("expected ',' or ']'")
        }
    }

    private mutating func parseNumber() throws(Failure) -> JSONValue {
        let start = index
        while index < bytes.count, "+-0123456789.eE".utf8.contains(bytes[index]) { index += 1 }
        guard index > start, let value = Double(String(decoding: bytes[start..<index], as: UTF8.self)) else {
            throw failure("invalid value")
        }
        return .number(value)
    }

    private mutating func hex4() throws(Failure) -> UInt32 {
        guard index + 4 <= bytes.count,
              let v = UInt32(String(decoding: bytes[index..<index + 4], as: UTF8.self), radix: 16)
        else { throw failure("invalid \\u escape") }
        index += 4
        return v
    }

    private mutating func parseString() throws(Failure) -> String {
        index += 1
        let start = index
        // Fast path: no escapes, decode the byte range directly.
        while index < bytes.count, bytes[index] != UInt8(ascii: "\""), bytes[index] != UInt8(ascii: "\\") { index += 1 }
        guard index < bytes.count else { throw failure("unterminated string") }
        if bytes[index] == UInt8(ascii: "\"") {
            index += 1
            return String(decoding: bytes[start..<index - 1], as: UTF8.self)
        }
        var out = Array(bytes[start..<index])
        while index < bytes.count {
            let b = bytes[index]
            index += 1
            if b == UInt8(ascii: "\"") { return String(decoding: out, as: UTF8.self) }
            guard b == UInt8(ascii: "\\") else { out.append(b); continue }
            guard index < bytes.count else { break }
            let e = bytes[index]
            index += 1
            switch e {
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "u"):
                var code = try hex4()
                if (0xD800..<0xDC00).contains(code), index + 6 <= bytes.count,
                   bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") {
                    index += 2
                    let low = try hex4()
                    if (0xDC00..<0xE000).contains(low) {
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    } else {
                        index -= 6  // not a pair: re-read the second escape on its own
                    }
                }
                out.append(contentsOf: Array(String(Unicode.Scalar(code) ?? "\u{FFFD}").utf8))
            default: out.append(e)  // \" \\ \/
            }
        }
        throw failure("unterminated string")
    }
}

/// A JSON value plus where it came from, so every error can name the file and field.
struct ConfigNode {
    let value: JSONValue
    let path: String
    let file: String

    func invalid(_ expected: String) -> TokenizerError {
        .invalidField(file: file, field: path, detail: "expected \(expected), found \(value.kindName)")
    }

    /// The member `key`, or nil when it is absent or JSON null.
    subscript(key: String) -> ConfigNode? {
        guard case .object(let members) = value,
              let member = members.first(where: { $0.key == key }) else { return nil }
        if case .null = member.value { return nil }
        return ConfigNode(value: member.value, path: path.isEmpty ? key : "\(path).\(key)", file: file)
    }

    func required(_ key: String) throws(TokenizerError) -> ConfigNode {
        guard let node = self[key] else {
            throw .missingField(file: file, field: path.isEmpty ? key : "\(path).\(key)")
        }
        return node
    }

    func asString() throws(TokenizerError) -> String {
        guard case .string(let s) = value else { throw invalid("a string") }
        return s
    }

    func asInt() throws(TokenizerError) -> Int {
        guard case .number(let d) = value, d == d.rounded(), abs(d) < 1e15 else { throw invalid("an integer") }
        return Int(d)
    }

    func asBool() throws(TokenizerError) -> Bool {
        guard case .bool(let b) = value else { throw invalid("a boolean") }
        return b
    }

    func asArray() throws(TokenizerError) -> [ConfigNode] {
        guard case .array(let items) = value else { throw invalid("an array") }
        return items.enumerated().map { ConfigNode(value: $1, path: "\(path)[\($0)]", file: file) }
    }

    func asObject() throws(TokenizerError) -> [(key: String, node: ConfigNode)] {
        guard case .object(let members) = value else { throw invalid("an object") }
        return members.map { ($0.key, ConfigNode(value: $0.value, path: "\(path).\($0.key)", file: file)) }
    }

    func string(_ key: String) throws(TokenizerError) -> String { try required(key).asString() }
    func optionalString(_ key: String) throws(TokenizerError) -> String? { try self[key]?.asString() }
    func bool(_ key: String, default fallback: Bool) throws(TokenizerError) -> Bool { try self[key]?.asBool() ?? fallback }
    func int(_ key: String, default fallback: Int) throws(TokenizerError) -> Int { try self[key]?.asInt() ?? fallback }

    /// The "type" discriminator of a component.
    func type() throws(TokenizerError) -> String { try string("type") }

    func unsupported(_ what: String) -> TokenizerError {
        .unsupported(file: file, field: path, value: what)
    }
}
