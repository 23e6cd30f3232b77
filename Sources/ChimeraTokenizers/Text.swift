import Foundation

/// A string key compared byte for byte.
///
/// Swift `String` equality and hashing use canonical equivalence, so "é" and
/// "e\u{301}" would be the same dictionary key. Tokenizer vocabularies are exact.
struct ExactString: Hashable {
    let value: String
    init(_ value: String) { self.value = value }

    static func == (a: ExactString, b: ExactString) -> Bool { a.value.utf8.elementsEqual(b.value.utf8) }

    func hash(into hasher: inout Hasher) {
        var copy = value
        copy.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
    }
}

extension String {
    /// Builds a string from Unicode scalars (tokenizers work on scalars, not grapheme clusters).
    init<S: Sequence>(scalars: S) where S.Element == Unicode.Scalar {
        var view = String.UnicodeScalarView()
        view.append(contentsOf: scalars)
        self = String(view)
    }

    /// Replaces every exact, non-overlapping occurrence of `pattern` (scalar-wise, not
    /// grapheme-wise: Foundation's replacement would not see " " inside " \u{301}").
    func replacingExactly(_ pattern: String, with replacement: String) -> String {
        components(separatedByExactly: pattern).map { $0.isMatch ? replacement : $0.text }.joined()
    }

    /// Parts between and including exact occurrences of `separator`, marked as matches.
    func components(separatedByExactly separator: String) -> [(text: String, isMatch: Bool)] {
        let sep = Array(separator.unicodeScalars)
        guard !sep.isEmpty else { return [(self, false)] }
        let scalars = Array(unicodeScalars)
        var parts: [(String, Bool)] = []
        var start = 0, i = 0
        while i < scalars.count {
            if i + sep.count <= scalars.count, scalars[i..<i + sep.count].elementsEqual(sep) {
                if start < i { parts.append((String(scalars: scalars[start..<i]), false)) }
                parts.append((separator, true))
                i += sep.count
                start = i
            } else {
                i += 1
            }
        }
        if start < scalars.count { parts.append((String(scalars: scalars[start...]), false)) }
        return parts
    }

    /// Decodes UTF-8, or nil if the bytes are not valid UTF-8 (`String(validating:)`
    /// needs macOS 15, the package targets macOS 14).
    init?(strictUTF8 bytes: [UInt8]) {
        var iterator = bytes.makeIterator()
        var decoder = UTF8()
        var scalars = String.UnicodeScalarView()
        while true {
            switch decoder.decode(&iterator) {
            case .scalarValue(let scalar): scalars.append(scalar)
            case .emptyInput: self = String(scalars); return
            case .error: return nil
            }
        }
    }

    func hasExactPrefix(_ prefix: String) -> Bool { utf8.starts(with: prefix.utf8) }
}

/// A compiled pattern from a tokenizer.json `{"String": ...}` or `{"Regex": ...}` object.
///
/// NSRegularExpression (ICU) supports \p{L}, \p{N}, lookahead and (?i:...) as used by
/// GPT-2/Qwen2/Llama-3 patterns; it works in UTF-16 offsets, so we slice an NSString.
struct SplitPattern: @unchecked Sendable {
    let regex: NSRegularExpression
    /// Set for `{"String": ...}` patterns: replacing those skips ICU (decoders run per token).
    let literal: String?
    /// Where the pattern was given (a file and its field), for errors.
    let source: (file: String, field: String)

    init(regex pattern: String, source: (file: String, field: String)? = nil) throws {
        regex = try NSRegularExpression(pattern: pattern)
        literal = nil
        self.source = source ?? ("the built-in pattern", pattern)
    }

    init(literal: String, source: (file: String, field: String)) throws {
        regex = try NSRegularExpression(pattern: NSRegularExpression.escapedPattern(for: literal))
        self.literal = literal
        self.source = source
    }

    /// Parses `{"String": "..."}` or `{"Regex": "..."}`.
    init(node: ConfigNode) throws(TokenizerError) {
        do {
            if let literal = try node["String"]?.asString() {
                try self.init(literal: literal, source: (node.file, node.path + ".String"))
            } else if let pattern = try node["Regex"]?.asString() {
                try self.init(regex: pattern, source: (node.file, node.path + ".Regex"))
            } else {
                throw node.invalid("an object with \"String\" or \"Regex\"")
            }
        } catch let error as TokenizerError {
            throw error
        } catch {
            throw .invalidField(file: node.file, field: node.path, detail: "invalid regex: \(error)")
        }
    }

    /// Longest the matches over a text of `characters` UTF-16 units may take: ICU backtracks
    /// without bound, and a pattern such as `(a+)+$` takes exponential time on some texts (24
    /// characters: over a second; each one more doubles it). Tokenizers' own patterns take
    /// microseconds a character.
    static func timeLimit(characters: Int) -> Double { 2 + 20e-6 * Double(characters) }

    /// The ranges of the matches in `text` (`ns` the same as an NSString), in order.
    func matchRanges(in text: String, _ ns: NSString) throws(TokenizerError) -> [NSRange] {
        var ranges: [NSRange] = []
        let start = Date(), limit = Self.timeLimit(characters: ns.length)
        var late = false
        // With .reportProgress ICU also calls the block now and then during a long match.
        regex.enumerateMatches(in: text, options: .reportProgress, range: NSRange(location: 0, length: ns.length)) { match, _, stop in
            if let match { ranges.append(match.range) }
            if Date().timeIntervalSince(start) > limit { late = true; stop.pointee = true }
        }
        if late { throw .patternTooSlow(file: source.file, field: source.field, characters: ns.length, seconds: limit) }
        return ranges
    }

    /// The whole text cut into consecutive (piece, isMatch) parts, as the Rust
    /// `Pattern::find_matches` does. Empty matches yield empty parts (callers drop them).
    func parts(of text: String) throws(TokenizerError) -> [(text: String, isMatch: Bool)] {
        let ns = text as NSString
        var result: [(String, Bool)] = []
        var previous = 0
        for r in try matchRanges(in: text, ns) {
            if r.location > previous {
                result.append((ns.substring(with: NSRange(location: previous, length: r.location - previous)), false))
            }
            result.append((ns.substring(with: r), true))
            previous = r.location + r.length
        }
        if previous < ns.length {
            result.append((ns.substring(from: previous), false))
        }
        return result
    }

    func replacingMatches(in text: String, with content: String) throws(TokenizerError) -> String {
        if let literal { return text.replacingExactly(literal, with: content) }
        return try parts(of: text).map { $0.isMatch ? content : $0.text }.joined()
    }
}

/// GPT-2's byte-to-unicode table: every byte maps to a printable character so
/// byte-level BPE vocabularies can be stored as JSON strings.
enum ByteLevelTable {
    static let byteToScalar: [Unicode.Scalar] = {
        var printable = Array(33...126) + Array(161...172) + Array(174...255)
        var scalars = printable.map { UInt32($0) }
        var extra: UInt32 = 0
        for b in 0..<256 where !printable.contains(b) {
            printable.append(b)
            scalars.append(256 + extra)
            extra += 1
        }
        var table = [Unicode.Scalar](repeating: " ", count: 256)
        for (b, s) in zip(printable, scalars) { table[b] = Unicode.Scalar(s)! }
        return table
    }()

    static let scalarToByte: [Unicode.Scalar: UInt8] = {
        var map: [Unicode.Scalar: UInt8] = [:]
        for (b, s) in byteToScalar.enumerated() { map[s] = UInt8(b) }
        return map
    }()

    static func encode(_ text: String) -> String {
        String(scalars: text.utf8.map { byteToScalar[Int($0)] })
    }

    /// Token text back to bytes; a token with any character outside the table is
    /// taken as raw UTF-8 (this is what Hugging Face does for added tokens).
    static func decodeBytes(_ token: String) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(token.unicodeScalars.count)
        for s in token.unicodeScalars {
            guard let b = scalarToByte[s] else { return Array(token.utf8) }
            bytes.append(b)
        }
        return bytes
    }
}
