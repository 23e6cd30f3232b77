import Foundation

/// The `normalizer` section: rewrites text before pre-tokenization. Applied to each
/// stretch of text between added tokens (and to normalized added tokens' contents).
protocol Normalizer: Sendable {
    func normalize(_ text: String) throws(TokenizerError) -> String
}

enum Normalizers {
    static func make(_ node: ConfigNode) throws(TokenizerError) -> any Normalizer {
        switch try node.type() {
        case "Sequence":
            return SequenceNormalizer(steps: try node.required("normalizers").asArray().map { node throws(TokenizerError) in try make(node) })
        case "Prepend":
            return PrependNormalizer(prefix: try node.string("prepend"))
        case "Replace":
            return ReplaceNormalizer(pattern: try SplitPattern(node: node.required("pattern")),
                                     content: try node.string("content"))
        case "NFC": return UnicodeNormalizer(form: .nfc)
        case "NFD": return UnicodeNormalizer(form: .nfd)
        case "NFKC": return UnicodeNormalizer(form: .nfkc)
        case "NFKD": return UnicodeNormalizer(form: .nfkd)
        case "Lowercase": return LowercaseNormalizer()
        case "Strip":
            return StripNormalizer(left: try node.bool("strip_left", default: true),
                                   right: try node.bool("strip_right", default: true))
        case let other:
            throw node.unsupported("normalizer type \"\(other)\"")
        }
    }
}

struct SequenceNormalizer: Normalizer {
    let steps: [any Normalizer]
    func normalize(_ text: String) throws(TokenizerError) -> String {
        var text = text
        for step in steps { text = try step.normalize(text) }
        return text
    }
}

/// Legacy SentencePiece layout: prepend "▁" (only to non-empty text, like the Rust code).
struct PrependNormalizer: Normalizer {
    let prefix: String
    func normalize(_ text: String) -> String { text.isEmpty ? text : prefix + text }
}

struct ReplaceNormalizer: Normalizer {
    let pattern: SplitPattern
    let content: String
    func normalize(_ text: String) throws(TokenizerError) -> String { try pattern.replacingMatches(in: text, with: content) }
}

/// Unicode normalization forms, as the Rust `unicode-normalization` crate behind Hugging Face's
/// normalizers computes them. Foundation's decompositions are right, but its compositions are not:
/// it composes an astral character with the mark after it by the character's low 16 bits
/// (U+10041 U+0301 became "Á") and leaves the marks of adjacent decompositions unordered
/// (U+0F73 U+0F73). The standard library's NFC (`_nfcCodeUnits`, public though underscored) of
/// Foundation's NFD/NFKD gives the Rust crate's result wherever both know the characters.
struct UnicodeNormalizer: Normalizer {
    enum Form { case nfc, nfd, nfkc, nfkd }
    let form: Form
    func normalize(_ text: String) -> String {
        switch form {
        case .nfc: Self.composed(text.decomposedStringWithCanonicalMapping)
        case .nfd: text.decomposedStringWithCanonicalMapping
        case .nfkc: Self.composed(text.decomposedStringWithCompatibilityMapping)
        case .nfkd: text.decomposedStringWithCompatibilityMapping
        }
    }

    static func composed(_ decomposed: String) -> String { String(decoding: decomposed._nfcCodeUnits, as: UTF8.self) }
}

struct LowercaseNormalizer: Normalizer {
    func normalize(_ text: String) -> String { text.lowercased() }
}

struct StripNormalizer: Normalizer {
    let left: Bool
    let right: Bool
    func normalize(_ text: String) -> String {
        var scalars = Substring(text).unicodeScalars
        if left { while let f = scalars.first, f.properties.isWhitespace { scalars.removeFirst() } }
        if right { while let l = scalars.last, l.properties.isWhitespace { scalars.removeLast() } }
        return String(scalars: scalars)
    }
}
