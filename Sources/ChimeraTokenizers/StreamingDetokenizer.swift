import Foundation

/// Incremental detokenization for generation: feed ids one at a time, get back only
/// the newly completed text.
///
/// It keeps two offsets into the ids (as text-generation-inference does): `prefixStart`
/// .. `readEnd` is text already emitted, kept as context. Each step decodes that small
/// window with and without the new tokens and emits the difference. Decoding both
/// from the same first token makes the SentencePiece leading-space strip cancel out,
/// so only the very first token of the sequence loses its space. While the window
/// ends in U+FFFD (a character split across tokens, e.g. a byte-fallback emoji in four
/// <0xNN> tokens) nothing is emitted; the tokens wait for the rest of the character.
public struct StreamingDetokenizer {
    public let tokenizer: Tokenizer
    public let skipSpecialTokens: Bool
    private var ids: [Int] = []
    private var prefixStart = 0
    private var readEnd = 0
    /// Text decoded from ids[prefixStart..<readEnd].
    private var prefixText = ""

    /// After this many held tokens the text is released even if it ends in U+FFFD:
    /// no UTF-8 character needs so many tokens, so the bytes are really invalid.
    private static let maxHeldTokens = 16

    public init(tokenizer: Tokenizer, skipSpecialTokens: Bool = true) {
        self.tokenizer = tokenizer
        self.skipSpecialTokens = skipSpecialTokens
    }

    /// Adds one token; returns the text it completes (often "", never a broken character).
    public mutating func append(_ id: Int) throws(TokenizerError) -> String {
        ids.append(id)
        let text = try tokenizer.decode(ids[prefixStart...], skipSpecialTokens: skipSpecialTokens)
        let held = ids.count - readEnd
        if text.unicodeScalars.last == "\u{FFFD}", held < Self.maxHeldTokens { return "" }
        return try advance(to: text)
    }

    /// Returns whatever is still held back (call once generation ends).
    public mutating func finish() throws(TokenizerError) -> String {
        try advance(to: tokenizer.decode(ids[prefixStart...], skipSpecialTokens: skipSpecialTokens))
    }

    /// Emits the part of `text` (decoded from prefixStart to the end) beyond the prefix,
    /// then slides the window so the next step only decodes recent tokens.
    private mutating func advance(to text: String) throws(TokenizerError) -> String {
        let old = prefixText.unicodeScalars
        let new = text.unicodeScalars
        guard new.count > old.count || !new.elementsEqual(old) else { return "" }
        // Normally `old` is a prefix of `new`; be tolerant if a decoder disagrees.
        let common = zip(old, new).prefix { $0 == $1 }.count
        let delta = String(scalars: new.dropFirst(common))
        prefixStart = readEnd
        readEnd = ids.count
        prefixText = try tokenizer.decode(ids[prefixStart..<readEnd], skipSpecialTokens: skipSpecialTokens)
        return delta
    }
}
