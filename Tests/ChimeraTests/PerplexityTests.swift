import ChimeraComponents
import ChimeraTensor
import Foundation
import Testing
@testable import Chimera

/// `chimera perplexity` against transformers' model(ids, labels=ids).loss, window by window
/// (Scripts/make_perplexity_fixtures.py wrote reference_perplexity.json for each fixture).
@Suite struct PerplexityTests {
    static func reference(_ name: String) throws -> [String: Any] {
        let url = packageRoot.appendingPathComponent("Tests/ChimeraTests/Fixtures/\(name)/reference_perplexity.json")
        return try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
    }

    /// Each window's summed negative log-likelihood is transformers' (to 1e-4 a prediction), fed
    /// whole or a few positions at a time through the cache, and close with a float16 cache.
    @Test(arguments: LanguageModelParityTests.fixtures.map(\.name))
    func windowLossesAreTransformers(name: String) throws {
        let reference = try Self.reference(name)
        let ids = try #require(reference["input_ids"] as? [Int]), window = try #require(reference["window"] as? Int)
        let windows = try #require(reference["windows"] as? [[String: Any]])
        let model = try LanguageModelFixture(name).importAndBuild().model
        let cache = model.makeCache(capacity: window), half = model.makeCache(capacity: window, precision: .f16)
        for expected in windows {
            let start = try #require(expected["start"] as? Int), sum = try #require(expected["nll_sum"] as? Double)
            let piece = Array(ids[start..<min(start + window, ids.count)])
            let whole = try negativeLogLikelihood(of: piece, model: model, cache: cache)
            #expect(abs(whole - sum) <= 1e-4 * Double(piece.count - 1), "\(name) window at \(start): \(whole) vs \(sum)")
            let chunked = try negativeLogLikelihood(of: piece, model: model, cache: cache, chunk: 3)
            #expect(abs(chunked - whole) <= 1e-4 * Double(piece.count - 1), "\(name) window at \(start), chunks of 3: \(chunked) vs \(whole)")
            let rounded = try negativeLogLikelihood(of: piece, model: model, cache: half)
            #expect(abs(rounded - whole) <= 1e-2 * Double(piece.count - 1), "\(name) window at \(start), f16 cache: \(rounded) vs \(whole)")
        }
        // Strided windows score only their tail, the rest being context: transformers' log-softmax sums.
        for expected in try #require(reference["strided_windows"] as? [[String: Any]]) {
            let start = try #require(expected["start"] as? Int), first = try #require(expected["first_scored"] as? Int)
            let sum = try #require(expected["nll_sum"] as? Double), count = try #require(expected["predictions"] as? Int)
            let piece = Array(ids[start..<min(start + window, ids.count)])
            let tail = try negativeLogLikelihood(of: piece, model: model, cache: cache, chunk: 5, scoredFrom: first)
            #expect(abs(tail - sum) <= 1e-4 * Double(count), "\(name) strided window at \(start): \(tail) vs \(sum)")
        }
    }

    /// The CLI tokenizes the text as transformers does and gives its perplexity; bad windows, a
    /// text too short and a missing file are named.
    @Test func perplexityFromTheCLI() throws {
        let reference = try Self.reference("lm-llama")
        let folder = try CLI.temporaryFolder()
        let text = folder.appendingPathComponent("text.txt")
        try Data(try #require(reference["text"] as? String).utf8).write(to: text)
        let imported = try CLI.run(["import", packageRoot.appendingPathComponent("Tests/ChimeraTests/Fixtures/lm-llama").path, "--out", folder.appendingPathComponent("m").path])
        let manifest = imported.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let run = try CLI.run(["perplexity", "--assembly", manifest, "--text-file", text.path, "--window", "\(reference["window"] as! Int)", "--json"])
        let result = try #require(try CLI.json(run.stdout) as? [String: Any], "\(run.all)")
        let expected = try #require(reference["perplexity"] as? Double)
        #expect(abs((result["perplexity"] as? Double ?? 0) / expected - 1) < 1e-4, "\(result) vs \(expected)")
        #expect(result["predictions"] as? Int == reference["predictions"] as? Int && result["text_tokens"] as? Int == (reference["input_ids"] as? [Int])?.count)
        #expect(run.stderr.contains("window 12/12"), "\(run.stderr)")
        let strided = try CLI.run(["perplexity", "--assembly", manifest, "--text-file", text.path, "--window", "16", "--stride", "\(reference["stride"] as! Int)", "--json"])
        let stridedResult = try #require(try CLI.json(strided.stdout) as? [String: Any], "\(strided.all)")
        let stridedExpected = try #require(reference["strided_perplexity"] as? Double)
        #expect(abs((stridedResult["perplexity"] as? Double ?? 0) / stridedExpected - 1) < 1e-4, "\(stridedResult) vs \(stridedExpected)")
        #expect(stridedResult["predictions"] as? Int == reference["strided_predictions"] as? Int && stridedResult["window_tokens"] as? Int == 186)
        let two = try CLI.run(["perplexity", "--assembly", manifest, "--text-file", text.path, "--window", "16", "--max-windows", "2", "--json"])
        let twoResult = try #require(try CLI.json(two.stdout) as? [String: Any], "\(two.all)")
        #expect(twoResult["windows"] as? Int == 2 && twoResult["predictions"] as? Int == 30 && twoResult["window_tokens"] as? Int == 32)

        let empty = folder.appendingPathComponent("empty.txt")
        try Data().write(to: empty)
        for (arguments, message) in [(["--window", "1"], "--window must be 2...128 (the context length), found 1"),
                                     (["--window", "129"], "--window must be 2...128 (the context length), found 129"),
                                     (["--text-file", empty.path], "the text is 1 token: a perplexity needs at least 2"),
                                     (["--text-file", folder.appendingPathComponent("none.txt").path], "none.txt: no such file or not readable"),
                                     (["--max-windows", "0"], "--max-windows must be 1 or more, found 0"),
                                     (["--window", "16", "--stride", "17"], "--stride must be 1...16 (the window), found 17")] {
            let base = ["perplexity", "--assembly", manifest] + (arguments.contains("--text-file") ? [] : ["--text-file", text.path])
            let r = try CLI.run(base + arguments)
            #expect(r.status != 0 && r.stderr.contains(message), "\(arguments): \(r.all)")
            if arguments.first == "--window" { #expect(!r.stderr.contains("loading"), "refused before loading: \(r.all)") }
        }
        // A model whose context holds one token has nothing to score (the range 2...1 trapped).
        var component = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: manifest))) as? [String: Any])
        component["id"] = "one-token"; component["context_length"] = 1
        let narrow = URL(fileURLWithPath: manifest).deletingLastPathComponent().appendingPathComponent("one-token.component.json")
        try JSONSerialization.data(withJSONObject: component).write(to: narrow)
        let one = try CLI.run(["perplexity", "--assembly", narrow.path, "--text-file", text.path])
        #expect(one.status != 0 && one.stderr.contains("the language model's context of 1 token leaves nothing to score"), "\(one.all)")
    }

    /// A NaN in one row of the head makes one logit column NaN, which a log-sum-exp passes over: an
    /// error as in generate, not a finite wrong perplexity.
    @Test func nonFiniteLogitsAreAnError() throws {
        let folder = try CLI.temporaryFolder().appendingPathComponent("lm-llama")
        try FileManager.default.copyItem(at: packageRoot.appendingPathComponent("Tests/ChimeraTests/Fixtures/lm-llama"), to: folder)
        let weights = folder.appendingPathComponent("model.safetensors")
        var bytes = [UInt8](try Data(contentsOf: weights))
        let headerLength = Int(bytes[0..<8].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
        let header = try #require(try JSONSerialization.jsonObject(with: Data(bytes[8..<8 + headerLength])) as? [String: Any])
        let head = try #require(header["lm_head.weight"] as? [String: Any])
        try #require(head["dtype"] as? String == "F16")
        let row5 = 8 + headerLength + (head["data_offsets"] as! [Int])[0] + 5 * (head["shape"] as! [Int])[1] * 2
        bytes[row5] = 0x00; bytes[row5 + 1] = 0x7E  // float16 NaN
        try Data(bytes).write(to: weights)
        let text = folder.appendingPathComponent("text.txt")
        try Data(try #require(try Self.reference("lm-llama")["text"] as? String).utf8).write(to: text)
        let out = try CLI.temporaryFolder()
        let manifest = try CLI.run(["import", folder.path, "--out", out.path]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let r = try CLI.run(["perplexity", "--assembly", manifest, "--text-file", text.path, "--window", "16", "--json"])
        #expect(r.status != 0 && r.stderr.contains("language model 'lm-llama' gave non-finite logits (NaN or infinity) at position 0"), "\(r.all)")
    }
}
