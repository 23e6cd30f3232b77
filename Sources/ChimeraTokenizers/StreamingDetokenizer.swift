import Foundation

/// Incremental detokenization for generation: feed ids one at a time, get back only
/// the newly completed text. The pieces joined are exactly `decode(ids, skipSpecialTokens:)`.
///
/// It keeps two offsets into the ids (as text-generation-inference does): `prefixStart`
/// .. `readEnd` is text already emitted, kept as context. Each step decodes that small
/// window with the new tokens and emits what is new. Decoding from the same first token
/// makes the SentencePiece leading-space strip cancel out, so only the very first token
/// of the sequence loses its space. Held back until they are settled:
/// - trailing U+FFFD, which may be a character still split across tokens (a byte-level
///   emoji in four tokens); the text before it is emitted;
/// - a run of <0xNN> byte-fallback tokens until a token ends it, since one invalid byte
///   turns the whole run into one U+FFFD a byte.
/// Tokens the decode drops (skipped special tokens, unknown ids) are not kept at all.
public struct StreamingDetokenizer {
    public let tokenizer: Tokenizer
    public let skipSpecialTokens: Bool
    private var ids: [Int] = []
    private var prefixStart = 0
    private var readEnd = 0
    /// Text decoded from ids[prefixStart..<readEnd] (all of it emitted).
    private var prefixText: [Unicode.Scalar] = []
    /// Scalars emitted beyond prefixText from the tokens after readEnd (their text is not settled).
    private var emittedBeyond = 0

    /// After this many held tokens everything is released: a pathological run (hundreds of
    /// literal U+FFFD, or of byte tokens) would otherwise make each step decode a longer window.
    /// (A character split across tokens at that moment would stream as U+FFFD.)
    private static let maxHeldTokens = 1024

    public init(tokenizer: Tokenizer, skipSpecialTokens: Bool = true) {
        self.tokenizer = tokenizer
        self.skipSpecialTokens = skipSpecialTokens
    }

    /// Tokens held for the next decode: what a step costs grows with it.
    var windowLength: Int { ids.count - prefixStart }

    /// Adds one token; returns the text it completes (often "", never a broken character).
    public mutating func append(_ id: Int) throws(TokenizerError) -> String {
        guard tokenizer.decoderInput(id, skipSpecialTokens: skipSpecialTokens) != nil else { return "" }
        ids.append(id)
        if ids.count - readEnd >= Self.maxHeldTokens { return try finish() }
        // An unfinished byte run: only the text before it is settled.
        var settledEnd = ids.count
        while settledEnd > readEnd, tokenizer.isFallbackByte(ids[settledEnd - 1]) { settledEnd -= 1 }
        let text = Array(try tokenizer.decode(ids[prefixStart..<settledEnd], skipSpecialTokens: skipSpecialTokens).unicodeScalars)
        var shown = text.count
        while shown > prefixText.count, text[shown - 1] == "\u{FFFD}" { shown -= 1 }
        return try emit(text[..<shown], slide: settledEnd == ids.count && shown == text.count)
    }

    /// Returns whatever is still held back (call once generation ends).
    public mutating func finish() throws(TokenizerError) -> String {
        let text = Array(try tokenizer.decode(ids[prefixStart...], skipSpecialTokens: skipSpecialTokens).unicodeScalars)
        return try emit(text[...], slide: true)
    }

    /// Emits the part of `text` (decoded from prefixStart) not emitted yet; with `slide`, the
    /// text is settled to the last token and the window moves on, so the next step only decodes
    /// recent tokens.
    private mutating func emit(_ text: ArraySlice<Unicode.Scalar>, slide: Bool) throws(TokenizerError) -> String {
        let done = prefixText.count + emittedBeyond
        // Normally what was emitted is a prefix of `text`; be tolerant if a decoder disagrees.
        let delta = text.count > done ? String(scalars: text.dropFirst(done)) : ""
        emittedBeyond = max(emittedBeyond, text.count - prefixText.count)
        if slide {
            prefixStart = readEnd
            readEnd = ids.count
            prefixText = Array(try tokenizer.decode(ids[prefixStart..<readEnd], skipSpecialTokens: skipSpecialTokens).unicodeScalars)
            emittedBeyond = 0
        }
        return delta
    }
}
