import Foundation
import Testing
@testable import ChimeraTokenizers

/// One reference result recorded by Scripts/make_tokenizer_fixtures.py with the
/// Hugging Face `tokenizers` library.
struct GoldenCase: Decodable {
    let text: String
    let ids: [Int]
    let ids_no_special: [Int]
    let decoded: String
    let decoded_skip: String
}

enum Fixtures {
    static let names = ["llama_style", "llama_legacy", "gpt2_style", "qwen2_style", "llama3_style"]

    static func url(_ name: String, _ ext: String = "json") throws -> URL {
        try #require(Bundle.module.url(forResource: name, withExtension: ext, subdirectory: "Fixtures"),
                     "missing fixture \(name).\(ext)")
    }

    static func tokenizer(_ name: String) throws -> Tokenizer { try Tokenizer(url: url(name)) }

    static func cases(_ name: String) throws -> [GoldenCase] {
        try JSONDecoder().decode([GoldenCase].self, from: Data(contentsOf: url(name + ".cases", "json")))
    }
}

/// Feeds ids one at a time and returns every chunk (including "") plus the final flush.
func stream(_ tokenizer: Tokenizer, _ ids: [Int], skipSpecialTokens: Bool) throws -> [String] {
    var detokenizer = StreamingDetokenizer(tokenizer: tokenizer, skipSpecialTokens: skipSpecialTokens)
    var chunks: [String] = []
    for id in ids { chunks.append(try detokenizer.append(id)) }
    return chunks + [try detokenizer.finish()]
}

@Suite("Golden fixtures from Hugging Face tokenizers")
struct TokenizerGoldenTests {
    @Test(arguments: Fixtures.names)
    func encodeMatchesReference(name: String) throws {
        let tokenizer = try Fixtures.tokenizer(name)
        let cases = try Fixtures.cases(name)
        #expect(cases.count >= 25)
        for c in cases {
            #expect(try tokenizer.encode(c.text) == c.ids, "\(name) encode \(c.text.debugDescription)")
            #expect(try tokenizer.encode(c.text, addSpecialTokens: false) == c.ids_no_special,
                    "\(name) encode(no special) \(c.text.debugDescription)")
        }
    }

    @Test(arguments: Fixtures.names)
    func decodeMatchesReference(name: String) throws {
        let tokenizer = try Fixtures.tokenizer(name)
        for c in try Fixtures.cases(name) {
            #expect(try tokenizer.decode(c.ids) == c.decoded, "\(name) decode \(c.text.debugDescription)")
            #expect(try tokenizer.decode(c.ids, skipSpecialTokens: true) == c.decoded_skip,
                    "\(name) decode(skip) \(c.text.debugDescription)")
        }
    }

    @Test(arguments: Fixtures.names)
    func streamingMatchesDecode(name: String) throws {
        let tokenizer = try Fixtures.tokenizer(name)
        for c in try Fixtures.cases(name) {
            let chunks = try stream(tokenizer, c.ids, skipSpecialTokens: true)
            #expect(chunks.joined() == c.decoded_skip, "\(name) stream \(c.text.debugDescription)")
            if !c.decoded_skip.contains("\u{FFFD}") {
                for chunk in chunks {
                    #expect(!chunk.contains("\u{FFFD}"), "\(name) broken chunk \(chunk.debugDescription) in \(c.text.debugDescription)")
                    #expect(String(strictUTF8: Array(chunk.utf8)) != nil)
                }
            }
            let withSpecials = try stream(tokenizer, c.ids, skipSpecialTokens: false)
            #expect(withSpecials.joined() == c.decoded, "\(name) stream(specials) \(c.text.debugDescription)")
        }
    }
}
