import Foundation

/// An entry of `added_tokens`: matched in the raw (or normalized) text before
/// pre-tokenization and mapped straight to its id.
struct AddedToken {
    let id: Int
    let content: String
    let special: Bool
    let singleWord: Bool
    let lstrip: Bool
    let rstrip: Bool
    let normalized: Bool

    init(node: ConfigNode) throws(TokenizerError) {
        id = try node.required("id").asInt()
        content = try node.string("content")
        special = try node.bool("special", default: false)
        singleWord = try node.bool("single_word", default: false)
        lstrip = try node.bool("lstrip", default: false)
        rstrip = try node.bool("rstrip", default: false)
        normalized = try node.bool("normalized", default: !special)
        guard id >= 0, !content.isEmpty else { throw node.invalid("a non-empty token with an id >= 0") }
    }
}

/// Splits text on added tokens: leftmost match wins, the longest at that position
/// (Aho-Corasick leftmost-longest in the Rust code), then single_word/lstrip/rstrip.
struct AddedTokenSplitter {
    enum Part {
        /// Plain text; `start` is its offset (in scalars) in the text that was split.
        case text(String, start: Int)
        case token(Int)
    }

    private struct Pattern {
        let scalars: [Unicode.Scalar]
        let token: AddedToken
    }

    /// Patterns bucketed by first scalar, longest first.
    private let patterns: [Unicode.Scalar: [Pattern]]

    /// `tokens` pairs each token with the text to look for (its content, or its
    /// normalized content for normalized tokens).
    init(_ tokens: [(text: String, token: AddedToken)]) {
        var buckets: [Unicode.Scalar: [Pattern]] = [:]
        for (text, token) in tokens {
            let scalars = Array(text.unicodeScalars)
            guard let first = scalars.first else { continue }
            buckets[first, default: []].append(Pattern(scalars: scalars, token: token))
        }
        patterns = buckets.mapValues { $0.sorted { $0.scalars.count > $1.scalars.count } }
    }

    var isEmpty: Bool { patterns.isEmpty }

    private static func isWordCharacter(_ s: Unicode.Scalar) -> Bool {
        s.properties.isAlphabetic || s.properties.numericType != nil
    }

    func split(_ text: String) -> [Part] {
        guard !patterns.isEmpty else { return [.text(text, start: 0)] }
        let s = Array(text.unicodeScalars)
        var parts: [Part] = []
        var segmentStart = 0
        var i = 0
        while i < s.count {
            guard let match = patterns[s[i]]?.first(where: {
                i + $0.scalars.count <= s.count && s[i..<i + $0.scalars.count].elementsEqual($0.scalars)
            }) else {
                i += 1
                continue
            }
            var start = i
            var stop = i + match.scalars.count
            i = stop
            let token = match.token
            if token.singleWord {
                let alone = (start == 0 || !Self.isWordCharacter(s[start - 1]))
                    && (stop == s.count || !Self.isWordCharacter(s[stop]))
                if !alone { continue }
            }
            if token.lstrip {
                while start > segmentStart, s[start - 1].properties.isWhitespace { start -= 1 }
            }
            if token.rstrip {
                while stop < s.count, s[stop].properties.isWhitespace { stop += 1 }
            }
            if segmentStart < start { parts.append(.text(String(scalars: s[segmentStart..<start]), start: segmentStart)) }
            parts.append(.token(token.id))
            segmentStart = stop
            i = stop
        }
        if segmentStart < s.count { parts.append(.text(String(scalars: s[segmentStart...]), start: segmentStart)) }
        return parts
    }
}
