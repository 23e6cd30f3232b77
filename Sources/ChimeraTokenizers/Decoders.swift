import Foundation

/// The `decoder` section: turns token strings back into text. Like the Rust
/// `decode_chain`, each step maps a list of token strings to a new list; the
/// results are concatenated at the end.
protocol Decoder: Sendable {
    func decodeChain(_ tokens: [String]) throws(TokenizerError) -> [String]
}

enum Decoders {
    static func make(_ node: ConfigNode) throws(TokenizerError) -> any Decoder {
        switch try node.type() {
        case "Sequence":
            return SequenceDecoder(steps: try node.required("decoders").asArray().map { node throws(TokenizerError) in try make(node) })
        case "Replace":
            return ReplaceDecoder(pattern: try SplitPattern(node: node.required("pattern")), content: try node.string("content"))
        case "ByteFallback": return ByteFallbackDecoder()
        case "Fuse": return FuseDecoder()
        case "Strip":
            return StripDecoder(content: try Unicode.Scalar(node: node.required("content")),
                                start: try node.int("start", default: 0), stop: try node.int("stop", default: 0))
        case "Metaspace":
            let pre = try MetaspacePreTokenizer(node: node)
            return MetaspaceDecoder(replacement: pre.replacement, stripFirst: pre.prependScheme != .never)
        case "ByteLevel": return ByteLevelDecoder()
        case let other:
            throw node.unsupported("decoder type \"\(other)\"")
        }
    }
}

extension Unicode.Scalar {
    /// A one-character JSON string (Strip's `content`).
    init(node: ConfigNode) throws(TokenizerError) {
        let text = try node.asString()
        guard text.unicodeScalars.count == 1, let scalar = text.unicodeScalars.first else {
            throw node.invalid("a single character")
        }
        self = scalar
    }
}

struct SequenceDecoder: Decoder {
    let steps: [any Decoder]
    func decodeChain(_ tokens: [String]) throws(TokenizerError) -> [String] {
        var tokens = tokens
        for step in steps { tokens = try step.decodeChain(tokens) }
        return tokens
    }
}

struct ReplaceDecoder: Decoder {
    let pattern: SplitPattern
    let content: String
    func decodeChain(_ tokens: [String]) throws(TokenizerError) -> [String] {
        try tokens.map { token throws(TokenizerError) in try pattern.replacingMatches(in: token, with: content) }
    }
}

/// Runs of <0xNN> tokens become the UTF-8 text they spell; an invalid run becomes
/// one U+FFFD per byte token (exactly what Hugging Face does).
struct ByteFallbackDecoder: Decoder {
    static func byte(of token: String) -> UInt8? {
        let u = Array(token.utf8)
        guard u.count == 6, u[0] == UInt8(ascii: "<"), u[1] == UInt8(ascii: "0"), u[2] == UInt8(ascii: "x"),
              u[5] == UInt8(ascii: ">") else { return nil }
        return UInt8(String(decoding: u[3..<5], as: UTF8.self), radix: 16)
    }

    func decodeChain(_ tokens: [String]) -> [String] {
        var out: [String] = []
        var pending: [UInt8] = []
        func flush() {
            guard !pending.isEmpty else { return }
            if let text = String(strictUTF8: pending) {
                out.append(text)
            } else {
                out.append(contentsOf: repeatElement("\u{FFFD}", count: pending.count))
            }
            pending.removeAll()
        }
        for token in tokens {
            if let b = Self.byte(of: token) { pending.append(b) } else { flush(); out.append(token) }
        }
        flush()
        return out
    }
}

struct FuseDecoder: Decoder {
    func decodeChain(_ tokens: [String]) -> [String] { [tokens.joined()] }
}

/// Removes up to `start` leading and `stop` trailing `content` characters per token.
struct StripDecoder: Decoder {
    let content: Unicode.Scalar
    let start: Int
    let stop: Int

    func decodeChain(_ tokens: [String]) -> [String] {
        tokens.map { token in
            var scalars = Substring(token).unicodeScalars
            var n = 0
            while n < start, scalars.first == content { scalars.removeFirst(); n += 1 }
            n = 0
            while n < stop, scalars.last == content { scalars.removeLast(); n += 1 }
            return String(scalars: scalars)
        }
    }
}

/// "▁" back to spaces; the first token drops them (the pre-tokenizer added one).
struct MetaspaceDecoder: Decoder {
    let replacement: String
    let stripFirst: Bool

    func decodeChain(_ tokens: [String]) -> [String] {
        tokens.enumerated().map { i, token in
            token.replacingExactly(replacement, with: i == 0 && stripFirst ? "" : " ")
        }
    }
}

/// Byte-level characters back to bytes, then lossy UTF-8 over the whole sequence.
struct ByteLevelDecoder: Decoder {
    func decodeChain(_ tokens: [String]) -> [String] {
        [String(decoding: tokens.flatMap(ByteLevelTable.decodeBytes), as: UTF8.self)]
    }
}
