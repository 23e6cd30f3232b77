import Foundation

/// A piece of text on its way to the model. `atStart` is true when the piece begins
/// at offset 0 of the original input (Metaspace's prepend_scheme "first" needs it).
struct PreToken {
    var text: String
    var atStart: Bool
}

/// The `pre_tokenizer` section: cuts text into words; the model never merges across words.
protocol PreTokenizer: Sendable {
    func split(_ piece: PreToken) throws(TokenizerError) -> [PreToken]
}

extension PreTokenizer {
    func callAsFunction(_ pieces: [PreToken]) throws(TokenizerError) -> [PreToken] {
        var out: [PreToken] = []
        for piece in pieces { out += try split(piece) }
        return out
    }
}

enum PreTokenizers {
    /// GPT-2's word pattern, used by ByteLevel when `use_regex` is true.
    static let gpt2Pattern = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
    static let gpt2Regex = try! SplitPattern(regex: gpt2Pattern)

    static func make(_ node: ConfigNode) throws(TokenizerError) -> any PreTokenizer {
        switch try node.type() {
        case "Sequence":
            return SequencePreTokenizer(steps: try node.required("pretokenizers").asArray().map { node throws(TokenizerError) in try make(node) })
        case "ByteLevel":
            return ByteLevelPreTokenizer(addPrefixSpace: try node.bool("add_prefix_space", default: true),
                                         useRegex: try node.bool("use_regex", default: true))
        case "Split":
            return SplitPreTokenizer(pattern: try SplitPattern(node: node.required("pattern")),
                                     behavior: try SplitBehavior(node: node.required("behavior")),
                                     invert: try node.bool("invert", default: false))
        case "Metaspace":
            return try MetaspacePreTokenizer(node: node)
        case "Whitespace":
            return SplitPreTokenizer(pattern: try! SplitPattern(regex: #"\w+|[^\w\s]+"#), behavior: .removed, invert: true)
        case "WhitespaceSplit":
            return SplitPreTokenizer(pattern: try! SplitPattern(regex: #"\s+"#), behavior: .removed, invert: false)
        case "Digits":
            return SplitPreTokenizer(pattern: try! SplitPattern(regex: #"\p{N}"#),
                                     behavior: try node.bool("individual_digits", default: false) ? .isolated : .contiguous,
                                     invert: false)
        case let other:
            throw node.unsupported("pre_tokenizer type \"\(other)\"")
        }
    }
}

struct SequencePreTokenizer: PreTokenizer {
    let steps: [any PreTokenizer]
    func split(_ piece: PreToken) throws(TokenizerError) -> [PreToken] {
        var pieces = [piece]
        for step in steps { pieces = try step(pieces) }
        return pieces
    }
}

/// How a Split keeps the delimiters it finds (mirrors `SplitDelimiterBehavior`).
enum SplitBehavior {
    case removed, isolated, mergedWithPrevious, mergedWithNext, contiguous

    init(node: ConfigNode) throws(TokenizerError) {
        switch try node.asString() {
        case "Removed": self = .removed
        case "Isolated": self = .isolated
        case "MergedWithPrevious": self = .mergedWithPrevious
        case "MergedWithNext": self = .mergedWithNext
        case "Contiguous": self = .contiguous
        case let other: throw node.unsupported("split behavior \"\(other)\"")
        }
    }

    /// Groups matched/unmatched parts as the Rust `NormalizedString::split` does.
    func apply(_ parts: [(text: String, isMatch: Bool)]) -> [String] {
        var out: [String] = []
        var previousMatch = false
        switch self {
        case .removed:
            out = parts.filter { !$0.isMatch }.map(\.text)
        case .isolated:
            out = parts.map(\.text)
        case .contiguous:
            for (i, part) in parts.enumerated() {
                if i > 0, part.isMatch == previousMatch { out[out.count - 1] += part.text } else { out.append(part.text) }
                previousMatch = part.isMatch
            }
        case .mergedWithPrevious:
            for part in parts {
                if part.isMatch, !previousMatch, !out.isEmpty { out[out.count - 1] += part.text } else { out.append(part.text) }
                previousMatch = part.isMatch
            }
        case .mergedWithNext:
            for part in parts.reversed() {
                if part.isMatch, !previousMatch, !out.isEmpty { out[out.count - 1] = part.text + out[out.count - 1] } else { out.append(part.text) }
                previousMatch = part.isMatch
            }
            out.reverse()
        }
        return out.filter { !$0.isEmpty }
    }
}

extension PreToken {
    /// Sub-pieces of this piece; only the first one can still be at the input start.
    func replaced(by texts: [String]) -> [PreToken] {
        texts.enumerated().map { PreToken(text: $1, atStart: atStart && $0 == 0) }
    }
}

struct SplitPreTokenizer: PreTokenizer {
    let pattern: SplitPattern
    let behavior: SplitBehavior
    let invert: Bool

    func split(_ piece: PreToken) throws(TokenizerError) -> [PreToken] {
        var parts = try pattern.parts(of: piece.text)
        if invert { parts = parts.map { ($0.text, !$0.isMatch) } }
        return piece.replaced(by: behavior.apply(parts))
    }
}

/// GPT-2 style: optionally add a leading space, split with the GPT-2 regex, then
/// spell every UTF-8 byte with the printable byte-level alphabet.
struct ByteLevelPreTokenizer: PreTokenizer {
    let addPrefixSpace: Bool
    let useRegex: Bool

    func split(_ piece: PreToken) throws(TokenizerError) -> [PreToken] {
        var text = piece.text
        if addPrefixSpace, !text.hasExactPrefix(" ") { text = " " + text }
        let words = useRegex ? SplitBehavior.isolated.apply(try PreTokenizers.gpt2Regex.parts(of: text)) : [text]
        return piece.replaced(by: words.map(ByteLevelTable.encode))
    }
}

/// SentencePiece style: spaces become "▁", a "▁" is prepended per `prepend_scheme`,
/// and with `split` each word starts at a "▁".
struct MetaspacePreTokenizer: PreTokenizer {
    enum PrependScheme { case always, first, never }
    let replacement: String
    let prependScheme: PrependScheme
    let splitWords: Bool

    init(node: ConfigNode) throws(TokenizerError) {
        replacement = try node.optionalString("replacement") ?? "▁"
        splitWords = try node.bool("split", default: true)
        if let scheme = node["prepend_scheme"] {
            switch try scheme.asString() {
            case "always": prependScheme = .always
            case "first": prependScheme = .first
            case "never": prependScheme = .never
            case let other: throw scheme.unsupported("prepend_scheme \"\(other)\"")
            }
        } else {
            // Older files only have add_prefix_space.
            prependScheme = try node.bool("add_prefix_space", default: true) ? .always : .never
        }
    }

    func split(_ piece: PreToken) -> [PreToken] {
        var text = piece.text.replacingExactly(" ", with: replacement)
        let wantsPrefix = prependScheme == .always || (prependScheme == .first && piece.atStart)
        if wantsPrefix, !text.hasExactPrefix(replacement) { text = replacement + text }
        guard splitWords else { return [PreToken(text: text, atStart: piece.atStart)] }
        let parts = text.components(separatedByExactly: replacement)
        return piece.replaced(by: SplitBehavior.mergedWithNext.apply(parts))
    }
}
