import Foundation
import Testing
@testable import ChimeraTokenizers

@Suite("Tokenizer API and streaming behaviour")
struct TokenizerBehaviorTests {
    @Test func llamaVocabularyAndSpecials() throws {
        let tokenizer = try Fixtures.tokenizer("llama_style")
        #expect(tokenizer.bosTokenID == 1)
        #expect(tokenizer.tokenID("<s>") == 1)
        #expect(tokenizer.tokenID("</s>") == 2)
        #expect(tokenizer.tokenID("<0x0A>") != nil)
        let image = try #require(tokenizer.tokenID("<image>"))
        let pad = try #require(tokenizer.tokenID("<pad>"))
        #expect(tokenizer.token(image) == "<image>")
        #expect(tokenizer.specialTokenIDs == [0, 1, 2, image])
        #expect(!tokenizer.specialTokenIDs.contains(pad))
        #expect(tokenizer.vocabularySize == max(image, pad) + 1)
        #expect(tokenizer.token(-1) == nil && tokenizer.token(1_000_000) == nil)
    }

    /// encode(_:limit:) gives the same ids as encode when they are at most `limit`, and
    /// `.moreTokensThan` when they are more: by the length bound before a word's merges
    /// (Metaspace without splitting: the whole text is one word) or by the count after them.
    @Test(arguments: ["llama_style", "llama_legacy", "gpt2_style", "qwen2_style"]) func encodeWithALimit(name: String) throws {
        let tokenizer = try Fixtures.tokenizer(name)
        let texts = ["Hello world", "  spaces   and\ttabs\n", "naïve café ☕️ 日本語 🎉🎉", String(repeating: "zq", count: 300),
                     "<image> mixed <s> specials </s>", String(repeating: "the quick brown fox ", count: 40)]
        for text in texts {
            let ids = try tokenizer.encode(text)
            #expect(try tokenizer.encode(text, limit: ids.count) == ids, "\(name): \(text)")
            #expect(throws: TokenizerError.moreTokensThan(limit: ids.count - 1)) { try tokenizer.encode(text, limit: ids.count - 1) }
        }
        let huge = String(repeating: "the quick brown fox ", count: 50_000)  // a megabyte
        #expect(throws: TokenizerError.moreTokensThan(limit: 100)) { try tokenizer.encode(huge, limit: 100) }
    }

    @Test func byteLevelHasNoBOS() throws {
        let tokenizer = try Fixtures.tokenizer("qwen2_style")
        #expect(tokenizer.bosTokenID == nil)
        #expect(tokenizer.specialTokenIDs == [0, 1, 2])
        let withSpecial = try tokenizer.encode("hi")
        #expect(try withSpecial == tokenizer.encode("hi", addSpecialTokens: false))
    }

    @Test func byteFallbackEmojiIsHeldUntilComplete() throws {
        let tokenizer = try Fixtures.tokenizer("llama_style")
        let ids = try tokenizer.encode("☃", addSpecialTokens: false)
        // "▁" then three <0xNN> byte tokens for the snowman.
        #expect(ids.count >= 4)
        let chunks = try stream(tokenizer, ids, skipSpecialTokens: true)
        #expect(chunks.joined() == "☃")
        #expect(chunks.filter { !$0.isEmpty } == ["☃"])
    }

    @Test func byteLevelTokenEndingMidCharacter() throws {
        let tokenizer = try Fixtures.tokenizer("gpt2_style")
        let text = "Ꙭ🙂 ok"  // rare characters: split into byte-level pieces
        let ids = try tokenizer.encode(text)
        let chunks = try stream(tokenizer, ids, skipSpecialTokens: true)
        #expect(chunks.joined() == text)
        #expect(chunks.allSatisfy { !$0.contains("\u{FFFD}") })
    }

    @Test func leadingSpaceOnlyStrippedForFirstToken() throws {
        let tokenizer = try Fixtures.tokenizer("llama_style")
        let ids = try tokenizer.encode("one two three", addSpecialTokens: true)
        let chunks = try stream(tokenizer, ids, skipSpecialTokens: true)
        #expect(chunks.joined() == "one two three")
        #expect(try tokenizer.decode(Array(ids.dropFirst(2)), skipSpecialTokens: true).first != " ")
    }

    /// A run of byte-fallback tokens is decoded as a whole: one invalid byte makes every byte of the
    /// run U+FFFD, so even the valid "A" before it must not stream out first (Hugging Face's decode
    /// gives "\u{FFFD}\u{FFFD}" for <0x41> <0xE4>).
    @Test func anInvalidByteRunStreamsAsItDecodes() throws {
        let tokenizer = try Fixtures.tokenizer("llama_style")
        #expect(try stream(tokenizer, [68, 231], skipSpecialTokens: true).joined() == "\u{FFFD}\u{FFFD}")
        #expect(try stream(tokenizer, [68, 231, 68], skipSpecialTokens: true).joined() == "\u{FFFD}\u{FFFD}\u{FFFD}")
        let ended = try tokenizer.encode("x", addSpecialTokens: false)
        #expect(try stream(tokenizer, [68, 231] + ended + [68], skipSpecialTokens: true).joined()
                == tokenizer.decode([68, 231] + ended + [68], skipSpecialTokens: true))
    }

    /// Literal U+FFFD characters before a character split across tokens: each is streamed once
    /// (Hugging Face's decodes: five U+FFFD then the character; the stream gave six, and with
    /// byte fallback sixteen, once a held window was released mid-character).
    @Test func literalReplacementCharactersStreamOnce() throws {
        let qwen = try Fixtures.tokenizer("qwen2_style")
        let ids = Array(repeating: [174, 126, 124], count: 5).flatMap { $0 } + [308, 225]
        #expect(try stream(qwen, ids, skipSpecialTokens: true).joined() == String(repeating: "\u{FFFD}", count: 5) + "一")
        let llama = try Fixtures.tokenizer("llama_style")
        let text = "x" + String(repeating: "\u{FFFD}", count: 5) + "😀"
        #expect(try stream(llama, try llama.encode(text), skipSpecialTokens: true).joined() == text)
        let long = String(repeating: "\u{FFFD}", count: 120) + "一 ok"
        let longIDs = try qwen.encode(long)
        let streamed = try stream(qwen, longIDs, skipSpecialTokens: true).joined()
        #expect(streamed == long, "\(streamed.unicodeScalars.count) scalars for \(long.unicodeScalars.count); \(longIDs.count) ids")
    }

    /// Tokens the decode skips (specials, and in some vocabularies the <0xNN> bytes) are not kept:
    /// a long run of them left every step decoding all of them again (quadratic; 200,000 took minutes).
    @Test func skippedTokensDoNotGrowTheWindow() throws {
        let tokenizer = try Fixtures.tokenizer("llama_style")
        var detokenizer = StreamingDetokenizer(tokenizer: tokenizer, skipSpecialTokens: true)
        let bos = try #require(tokenizer.bosTokenID)
        for _ in 0..<1000 { #expect(try detokenizer.append(bos) == "") }
        #expect(detokenizer.windowLength == 0)
        var out = ""
        for id in try tokenizer.encode("one two", addSpecialTokens: false) { out += try detokenizer.append(id) }
        out += try detokenizer.finish()
        #expect(out == "one two" && detokenizer.windowLength < 8)
    }

    /// NFC as Hugging Face's normalizer computes it (ids from `tokenizers`): Foundation's
    /// composition turned U+10041 U+0301 into "Á" and left U+0F73 U+0F73's marks unordered.
    @Test func nfcMatchesTheRustNormalizer() throws {
        let tokenizer = try Fixtures.tokenizer("qwen2_style")
        #expect(try tokenizer.encode("\u{10041}\u{0301}", addSpecialTokens: false) == [175, 241, 226, 226, 139, 226])
        #expect(try tokenizer.encode("\u{0F73}\u{0F73}", addSpecialTokens: false) == [159, 124, 112, 159, 124, 112, 159, 124, 113, 159, 124, 113])
        #expect(try tokenizer.encode("e\u{0301}\u{0327}", addSpecialTokens: false) == [135, 105, 139, 226])
        #expect(UnicodeNormalizer(form: .nfkc).normalize("\u{10041}\u{0301}ﬁ") == "\u{10041}\u{0301}fi")
        #expect(UnicodeNormalizer(form: .nfd).normalize("\u{E9}") == "e\u{0301}")
    }

    @Test func streamingWindowStaysSmall() throws {
        // A long stream must still equal the one-shot decode.
        let tokenizer = try Fixtures.tokenizer("qwen2_style")
        let text = String(repeating: "Le café 你好 🙂 12345\n", count: 60)
        let ids = try tokenizer.encode(text)
        #expect(try stream(tokenizer, ids, skipSpecialTokens: true).joined() == text)
    }

    @Test func canonicallyEquivalentTokensStayDistinct() throws {
        // "é" precomposed and decomposed are different vocab entries.
        let json = #"{"model": {"type": "BPE", "vocab": {"\u00e9": 0, "e": 1, "\u0301": 2, "e\u0301": 3}, "merges": [["e", "\u0301"]]}}"#
        let tokenizer = try Tokenizer(data: Data(json.utf8), name: "inline.json")
        #expect(try tokenizer.encode("\u{e9}") == [0])
        #expect(try tokenizer.encode("e\u{301}") == [3])
        #expect(tokenizer.vocabularySize == 4)
    }

    /// A merge listed twice ranks by its last place, as `tokenizers` (its merges go into a map, the
    /// later entry replacing the earlier): here "b c" then comes first, "abc" → a, bc.
    @Test func aMergeListedTwiceRanksByItsLastPlace() throws {
        let json = #"{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "bc": 4}, "merges": ["a b", "b c", "a b"]}}"#
        #expect(try Tokenizer(data: Data(json.utf8), name: "inline.json").encode("abc") == [0, 4])
        let once = #"{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "bc": 4}, "merges": ["a b", "b c"]}}"#
        #expect(try Tokenizer(data: Data(once.utf8), name: "inline.json").encode("abc") == [3, 2])
    }

    @Test func aPatternThatBacktracksWithoutBoundIsAnErrorNotAHang() throws {
        // ICU takes exponential time over "aaa…a!" with this pattern (24 a's: over a second, 40: hours).
        let json = #"{"model": {"type": "BPE", "vocab": {"a": 0, "!": 1}, "merges": []},"#
            + #" "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(a+)+$"}, "behavior": "Isolated"}}"#
        let tokenizer = try Tokenizer(data: Data(json.utf8), name: "slow.json")
        #expect(try tokenizer.encode("aaa!") == [0, 0, 0, 1])
        let text = String(repeating: "a", count: 40) + "!"
        let started = Date()
        #expect(throws: TokenizerError.patternTooSlow(file: "slow.json", field: "pre_tokenizer.pattern.Regex", characters: 41,
                                                      seconds: 2 + 20e-6 * 41)) {
            _ = try tokenizer.encode(text)
        }
        #expect(Date().timeIntervalSince(started) < 30)
    }

    @Test func concurrentEncodesAgree() async throws {
        let tokenizer = try Fixtures.tokenizer("gpt2_style")
        let text = "The quick brown fox jumps over the lazy dog. 12345 café"
        let expected = try tokenizer.encode(text)
        let results = try await withThrowingTaskGroup(of: [Int].self) { group in
            for _ in 0..<8 { group.addTask { try tokenizer.encode(text) } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(results.allSatisfy { $0 == expected })
    }
}

@Suite("Errors on bad tokenizer files")
struct TokenizerErrorTests {
    func error(_ json: String, name: String = "bad.json") -> TokenizerError? {
        do {
            _ = try Tokenizer(data: Data(json.utf8), name: name)
            return nil
        } catch {
            return error as? TokenizerError
        }
    }

    @Test func malformedJSON() {
        let e = error(#"{"model": {"type": "BPE", "vocab": {"a": 0}"#)
        guard case .malformedJSON(let file, _)? = e else { Issue.record("got \(String(describing: e))"); return }
        #expect(file == "bad.json")
        #expect(e?.localizedDescription.contains("bad.json") == true)
    }

    @Test func unsupportedModelType() throws {
        let e = try #require(error(#"{"model": {"type": "WordPiece", "vocab": {"a": 0}}}"#))
        #expect(e == .unsupported(file: "bad.json", field: "model.type", value: "model type \"WordPiece\""))
        let message = e.localizedDescription
        #expect(message.contains("bad.json") && message.contains("model.type") && message.contains("WordPiece"))
    }

    @Test func unsupportedPreTokenizer() throws {
        let e = try #require(error(#"{"pre_tokenizer": {"type": "BertPreTokenizer"}, "model": {"type": "BPE", "vocab": {}, "merges": []}}"#))
        #expect(e.localizedDescription.contains("pre_tokenizer"))
        #expect(e.localizedDescription.contains("BertPreTokenizer"))
    }

    @Test func missingVocab() throws {
        let e = try #require(error(#"{"model": {"type": "BPE", "merges": []}}"#))
        #expect(e == .missingField(file: "bad.json", field: "model.vocab"))
        #expect(e.localizedDescription.contains("model.vocab"))
    }

    @Test func wrongFieldType() throws {
        let e = try #require(error(#"{"model": {"type": "BPE", "vocab": {"a": "zero"}}}"#))
        #expect(e.localizedDescription.contains("model.vocab.a"))
    }

    @Test func mergeOutsideVocab() throws {
        let e = try #require(error(#"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}}"#))
        #expect(e.localizedDescription.contains("model.merges[0]"))
    }

    @Test func missingFile() throws {
        let url = URL(fileURLWithPath: "/nonexistent/dir/tokenizer.json")
        do {
            _ = try Tokenizer(url: url)
            Issue.record("expected an error")
        } catch let e as TokenizerError {
            guard case .fileNotReadable(let file, _) = e else { Issue.record("got \(e)"); return }
            #expect(file == url.path)
            #expect(e.localizedDescription.contains("/nonexistent/dir/tokenizer.json"))
        }
    }

    @Test(arguments: ["", "[]", "null", "{\"model\": 3}", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -1}}}",
                      "{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": [[\"a\"]]}}"])
    func neverCrashes(json: String) {
        #expect(error(json) != nil)
    }

    @Test func deepNestingIsAnErrorNotAStackOverflow() {
        #expect(error(String(repeating: "[", count: 100_000)) != nil)
    }
}
