@testable import ChimeraComponents
import ChimeraIO
import ChimeraTokenizers
import Foundation
import Testing
@testable import Chimera

private typealias F = ManifestFixtures

/// Sizes and counts from files, plugins and options that are out of any sensible range: each must be
/// a clear error, not an integer overflow, an out-of-range index or an allocation that kills the
/// process (every case here trapped before).
@Suite struct BadInputTests {
    @Test func jsonIntegersOutsideIntAreNotIntegers() {
        #expect(JSONValue.number(1e20).intValue == nil)
        #expect(JSONValue.number(-1e300).intValue == nil)
        #expect(JSONValue.number(2.5).intValue == nil)
        #expect(JSONValue.number(4096).intValue == 4096)
    }

    @Test func listingAManifestWithAGarbageWidthStillLists() throws {
        // `list` and `compat` read a language model's width loosely, through intValue.
        let folder = try F.temporaryFolder()
        var m = try F.relocatable(F.llmID) { $0["hidden_size"] = 1e20 }
        m["id"] = "garbage-width-llm"
        try F.write(m, to: folder, name: "garbage.component.json")
        let r = try CLI.run(["list", "--kind", "language_model", "--manifests", folder.path])
        #expect(r.status == 0 && r.stdout.contains("garbage-width-llm"), "\(r.all)")
    }

    // MARK: safetensors headers

    /// A file of an 8-byte header length, `header` and `data`.
    static func safetensors(length: UInt64? = nil, header: String, data: Int = 16) throws -> String {
        var bytes = Data()
        withUnsafeBytes(of: (length ?? UInt64(header.utf8.count)).littleEndian) { bytes.append(contentsOf: $0) }
        bytes.append(contentsOf: Array(header.utf8))
        bytes.append(Data(count: data))
        let path = temporaryDirectory().appendingPathComponent("w.safetensors").path
        try bytes.write(to: URL(fileURLWithPath: path))
        return path
    }

    @Test func aHeaderLengthBeyondIntIsACorruptHeader() throws {
        let path = try Self.safetensors(length: 0xFFFF_FFFF_FFFF_FFF0, header: "{}")
        let message = message { _ = try SafeTensorsFile(path: path) }
        #expect(message.contains("corrupt safetensors header") && message.contains("header length 18446744073709551600"), "\(message)")
    }

    @Test(arguments: [
        (#"{"w": {"dtype": "F32", "shape": [1099511627776, 1099511627776], "data_offsets": [0, 16]}}"#, "expected more than any file holds"),
        (#"{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 1e30]}}"#, "'data_offsets' is not a pair of integers"),
        (#"{"w": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}}"#, "'shape' is not a list of non-negative integers"),
        (#"{"w": {"dtype": 5, "shape": [4], "data_offsets": [0, 16]}}"#, "'dtype' is not a string"),
        (#"{"v": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]}, "w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}"#,
         "its data [8, 16) overlaps tensor 'v''s [0, 12)"),
    ])
    func garbageTensorEntriesAreNamed(header: String, expected: String) throws {
        let path = try Self.safetensors(header: header)
        let message = message { _ = try SafeTensorsFile(path: path) }
        #expect(message.contains("tensor 'w'") && message.contains(expected), "\(message)")
    }

    @Test func anIndexListingNoTensorsIsNamed() throws {
        let index = temporaryDirectory().appendingPathComponent("model.safetensors.index.json")
        try Data(#"{"metadata": {}, "weight_map": {}}"#.utf8).write(to: index)
        let text = message { _ = try WeightStore(files: [index.path]) }
        #expect(text.contains("model.safetensors.index.json") && text.contains("its 'weight_map' lists no tensors"), "\(text)")
    }

    @Test func aFIFOOrAFolderIsNoWeightsOrImageFile() throws {
        let folder = temporaryDirectory(), fifo = folder.appendingPathComponent("model.safetensors")
        #expect(mkfifo(fifo.path, 0o600) == 0)
        // Opening the FIFO used to wait for a writer forever.
        #expect(message { _ = try SafeTensorsFile(path: fifo.path) }.contains("it is not a regular file"))
        #expect(message { _ = try ImageDecoder.decode(contentsOf: fifo) }.contains("it is not a regular file"))
        #expect(message { _ = try SafeTensorsFile(path: folder.path) }.contains("it is a folder, not a file"))
        // A manifest that is a FIFO: refused when named, skipped when a catalogue folder is read.
        let manifest = folder.appendingPathComponent("pipe.component.json")
        #expect(mkfifo(manifest.path, 0o600) == 0)
        #expect(message { _ = try AnyManifest.load(contentsOf: manifest) }.contains("it is not a regular file"))
        var catalog = Catalog()
        try catalog.load(directory: folder)
        #expect(catalog.components.isEmpty)
    }

    @Test func aFIFOIsNoTokenizerConversationConfigOrIndex() throws {
        let folder = temporaryDirectory()
        func fifo(_ name: String) -> URL {
            let url = folder.appendingPathComponent(name)
            #expect(mkfifo(url.path, 0o600) == 0)
            return url
        }
        // Foundation declined these already, but said "no such file" or "Permission denied".
        let expected = "it is not a regular file"
        #expect(message { _ = try Tokenizer(url: fifo("tokenizer.json")) }.contains(expected))
        #expect(message { _ = try Tokenizer(url: folder) }.contains("it is a folder, not a file"))
        let conversation = message { _ = try ChatTurn.conversation(contentsOf: fifo("chat.json")) }
        #expect(conversation.contains("chat.json: cannot read the conversation: " + expected), "\(conversation)")
        #expect(message { _ = try ImagePreprocessing(huggingFaceConfig: fifo("preprocessor_config.json")) }.contains(expected))
        #expect(message { _ = try WeightStore(files: [fifo("model.safetensors.index.json").path]) }.contains(expected))
        let checkpoint = temporaryDirectory()
        #expect(mkfifo(checkpoint.appendingPathComponent("config.json").path, 0o600) == 0)
        let imported = message { _ = try CheckpointImporter(checkpoint: checkpoint, outputDirectory: temporaryDirectory()).run() }
        #expect(imported.contains("config.json") && imported.contains(expected), "\(imported)")
    }

    // MARK: manifests' sizes

    /// The error building the default language model (shapes only) with its config changed by `change`.
    static func languageModelRefusal(_ change: (inout [String: Any]) -> Void) throws -> String {
        let manifest = try F.component(try F.relocatable(F.llmID, config: change), in: try F.temporaryFolder())
        return message { _ = try BuiltinFamilies.registry().build(manifest, substitute: .shapesOnly) }
    }

    @Test(arguments: [
        ("hidden_size", 100_000_000, "config.hidden_size: must be at most 65536"),
        ("vocab_size", 1e15, "config.vocab_size: must be at most 4194304"),
        ("layers", 1_099_511_627_776, "config.layers: must be at most 1024"),
    ])
    func languageModelSizesAreBounded(field: String, value: Double, expected: String) throws {
        let message = try Self.languageModelRefusal { $0[field] = value }
        #expect(message.contains(expected), "\(message)")
    }

    @Test func cacheWidthsAreBounded() throws {
        // Every size within its bound, but keys and values 4 M floats wide a layer: planning allocated a terabyte.
        let message = try Self.languageModelRefusal { config in
            for (key, value) in [("hidden_size", 64), ("intermediate_size", 64), ("layers", 1024), ("heads", 1024), ("kv_heads", 1024), ("head_dim", 4096)] {
                config[key] = value
            }
        }
        #expect(message.contains("config.heads: 1024 heads of 4096 dimensions are 4194304 wide, more than 65536"), "\(message)")
    }

    /// Preprocessing that would turn every image into NaNs, one colour or its negative is refused
    /// where it is read, naming the field (a std of 1e-38 surfaced as the language model's
    /// "non-finite logits").
    @Test(arguments: [("std", "[1e-38, 1e-38, 1e-38]", "make normalized pixels as large as"),
                      ("std", "[-0.5, 0.5, 0.5]", "std values must be finite and positive"),
                      ("rescale_factor", "0", "rescale_factor must be finite and positive"),
                      ("rescale_factor", "1e39", "rescale_factor must be finite and positive"),
                      ("rescale_factor", "1e10", "make normalized pixels as large as")])
    func preprocessingThatRuinsEveryImageIsRefused(field: String, json: String, expected: String) throws {
        let message = try F.refusal(of: F.encoderID) { m in
            var preprocess = try #require(m["preprocess"] as? [String: Any])
            preprocess[field] = try JSONSerialization.jsonObject(with: Data(json.utf8), options: .fragmentsAllowed)
            m["preprocess"] = preprocess
        }
        #expect(message.contains(expected), "\(message)")
    }

    @Test func aGarbageMeanIsRefusedWhereItIsRead() throws {
        // Padding to a square paints the mean colour: mean · 255 trapped converting to an integer.
        let message = try F.refusal(of: F.encoderID) { m in
            var preprocess = try #require(m["preprocess"] as? [String: Any])
            preprocess["mean"] = [1e20, 0.5, 0.5]
            preprocess["pad_to_square"] = true
            m["preprocess"] = preprocess
        }
        #expect(message.contains("mean values must be finite and within ±10000"), "\(message)")
    }

    @Test func aNumberBeyondItsFieldIsNamed() throws {
        let message = try Self.languageModelRefusal { $0["hidden_size"] = 1e20 }
        #expect(message.contains("config.hidden_size: 1e+20 is beyond the range of its field"), "\(message)")
        let float = try Self.languageModelRefusal { $0["rope_theta"] = 1e300 }
        #expect(float.contains("config.rope_theta: 1e+300 is beyond the range of its field"), "\(float)")
    }

    @Test func anOddHeadDimensionCannotRotate() throws {
        let message = try Self.languageModelRefusal { $0["head_dim"] = 15 }
        #expect(message.contains("head_dim") && message.contains("heads of 15 dimensions; rotary embeddings need an even number"), "\(message)")
    }

    @Test func aSyntheticTensorTooLargeToPlanIsNamed() throws {
        // Within every bound on its own, the embedding table is 2^16 × 2^22 elements.
        let message = try Self.languageModelRefusal { config in
            config["hidden_size"] = 1 << 16; config["vocab_size"] = 1 << 22; config["head_dim"] = 64
        }
        #expect(message.contains("tensor 'model.language_model.embed_tokens.weight' of shape [4194304, 65536] is too large"), "\(message)")
    }

    @Test(arguments: [("channels", 0, "config.channels: must be 3 (images are preprocessed to RGB), found 0"),
                      ("hidden_size", 1 << 20, "config.hidden_size: must be at most 65536, found 1048576")])
    func visionEncoderSizesAreBounded(field: String, value: Int, expected: String) throws {
        let manifest = try F.component(try F.relocatable(F.encoderID) { $0[field] = value }, in: try F.temporaryFolder())
        let message = message { _ = try BuiltinFamilies.registry().build(manifest, substitute: .shapesOnly) }
        #expect(message.contains(expected), "\(message)")
    }

    @Test func contextLengthIsBounded() throws {
        let message = try F.refusal(of: F.llmID) { $0["context_length"] = 1 << 40 }
        #expect(message.contains("context_length: must be positive and at most 16777216"), "\(message)")
    }

    @Test func encoderOutputTokensAreBounded() throws {
        let message = try F.refusal(of: F.encoderID) { m in
            var output = try #require(m["output"] as? [String: Any])
            output["tokens"] = 5_000_000_000_000_000_000 as Int
            m["output"] = output
        }
        #expect(message.contains("output.tokens: must be positive and at most 16777216"), "\(message)")
    }

    @Test func connectorWidthsAreBounded() throws {
        let message = try F.refusal(of: F.connectorID) { $0["input_width"] = 1 << 40 }
        #expect(message.contains("input_width: expected a positive integer or \"auto\" (integers up to 65536)"), "\(message)")
    }

    @Test(arguments: [
        ("ldpv2", #"{"grid": [4294967296, 4294967296]}"#, "grid: must be two positive sizes"),
        ("pixel-shuffle", #"{"factor": 4294967296}"#, "factor: must be positive and at most 64"),
        ("resampler", #"{"num_queries": 64, "layers": 1000000000}"#, "layers: must be at most 1024"),
        ("mlp", #"{"depth": 1099511627776}"#, "depth must be 1...64"),
    ])
    func connectorConfigsAreBounded(family: String, config: String, expected: String) throws {
        let folder = try F.temporaryFolder()
        var m = try F.shipped(F.connectorID)
        m["family"] = family
        m["config"] = try JSONSerialization.jsonObject(with: Data(config.utf8))
        m["weights"] = nil
        let manifest = try F.component(m, in: folder)
        let message = message {
            _ = try BuiltinFamilies.registry().build(manifest, inputWidth: 64, outputWidth: 128, substitute: .shapesOnly)
        }
        #expect(message.contains(expected), "\(message)")
    }

    // MARK: options

    @Test func planningBeyondTheModelsContextIsRefused() throws {
        let message = message { _ = try PlannerTests.planner().plan("tinyllama-1.1b-chat", context: 9_999_999_999) }
        #expect(message.contains("--context 9999999999 is longer than language model 'tinyllama-1.1b-chat' can attend over (its context length is 2048)"),
                "\(message)")
    }

    /// The tiny default's image is 16 tokens (17 minus the class token): a context of 16 or less
    /// holds no prompt with it, and a plan that said it fits would be wrong.
    @Test func planningAContextShorterThanTheInputsIsRefused() throws {
        let message = message { _ = try PlannerTests.planner().plan(ManifestFixtures.assemblyID, context: 16) }
        #expect(message.contains("--context 16 cannot hold the assembly's inputs: one of each takes 16 tokens (inputs[0] '<image>': 16)"), "\(message)")
        #expect(message.contains("plan for --context 17 or more"), "\(message)")
        #expect(try PlannerTests.planner().plan(ManifestFixtures.assemblyID, context: 17).contextTokens == 17)
    }

    @Test func aHugeMaxTokensIsTooLongNotAnOverflow() throws {
        let r = try CLI.run(["generate", "--prompt", "hi", "--max-tokens", "9223372036854775807"])
        #expect(r.status != 0 && r.stderr.contains("new tokens it needs more positions than the context length of 512 (at most"), "\(r.all)")
    }

    /// --threads (bench and generate) and CHIMERA_THREADS are bounded, named with the subcommand's
    /// usage; a variable that is not a count is named rather than ignored.
    @Test(arguments: [(["--threads", "3000000000"], [:], "--threads must be 1...1024, found 3000000000"),
                      (["--threads", "0"], [:], "--threads must be 1...1024, found 0"),
                      ([], ["CHIMERA_THREADS": "abc"], "CHIMERA_THREADS must be 1...1024, found 'abc'"),
                      ([], ["CHIMERA_THREADS": "-5"], "CHIMERA_THREADS must be 1...1024, found '-5'")])
    func threadsAreBounded(arguments: [String], environment: [String: String], expected: String) throws {
        for command in [["bench", "--synthetic", "tiny", "--no-bandwidth"], ["generate", "--max-tokens", "1"]] {
            let r = try CLI.run(command + arguments, environment: environment)
            #expect(r.status != 0 && r.stderr.contains(expected) && r.stderr.contains("Usage: chimera \(command[0])"), "\(r.all)")
        }
        // A valid variable is used when no flag is given.
        let one = try CLI.run(["bench", "--synthetic", "tiny", "--no-bandwidth", "--no-encoder", "--decode-tokens", "1"], environment: ["CHIMERA_THREADS": "1"])
        #expect((try CLI.json(one.stdout) as? [String: Any])?["threads"] as? Int == 1, "\(one.all)")
    }

    @Test func benchCountsAreBoundedEachByName() throws {
        let runs = try CLI.run(["bench", "--synthetic", "tiny", "--no-llm", "--encode-runs", "9223372036854775807"])
        #expect(runs.status != 0 && runs.stderr.contains("--encode-runs must be 1...1000, found 9223372036854775807"), "\(runs.all)")
        let prompt = try CLI.run(["bench", "--synthetic", "tiny", "--prompt-tokens", "0"])
        #expect(prompt.status != 0 && prompt.stderr.contains("--prompt-tokens must be positive, found 0"), "\(prompt.all)")
    }

    @Test func aHugeDecodeCountIsBeyondTheContext() throws {
        let r = try CLI.run(["bench", "--synthetic", "tiny", "--no-encoder", "--decode-tokens", "9223372036854775807"])
        #expect(r.status != 0 && r.stderr.contains("decoded + 8 paired with the bandwidth probes need more positions than"), "\(r.all)")
    }

    // MARK: tokenizers that disagree with the prompt

    /// A copy of the default model whose tokenizer is changed by `change`.
    static func defaultModel(tokenizer change: (inout [String: Any]) -> Void) throws -> URL {
        let assembly = try F.copyOfDefaults(renamedTo: "retokenized")
        let folder = assembly.deletingLastPathComponent()
        let url = folder.appendingPathComponent("checkpoint/tokenizer.json")
        var tokenizer = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        change(&tokenizer)
        try JSONSerialization.data(withJSONObject: tokenizer).write(to: url)
        return assembly
    }

    @Test func aBOSWithThePlaceholdersIDIsRefused() throws {
        let assembly = try Self.defaultModel { t in
            t["post_processor"] = ["type": "TemplateProcessing", "single": [["SpecialToken": ["id": "<s>", "type_id": 0]], ["Sequence": ["id": "A", "type_id": 0]]],
                                   "pair": [["Sequence": ["id": "A", "type_id": 0]]],
                                   "special_tokens": ["<s>": ["id": "<s>", "ids": [613], "tokens": ["<image>"]]]]
        }
        let image = F.defaults.appendingPathComponent("checkpoint/sample.png").path
        let r = try CLI.run(["generate", "--assembly", assembly.path, "--image", image, "--prompt", "USER: <image> hi"])
        #expect(r.status != 0 && r.stderr.contains("the tokenized prompt holds more <image> tokens (id 613) than its 1 placeholder"), "\(r.all)")
    }

    /// A copy of the default model whose float16 tensor `name` holds a NaN at element `element`.
    static func poisonedDefaults(tensor name: String, element: Int) throws -> URL {
        let assembly = try F.copyOfDefaults(renamedTo: "poisoned")
        let url = assembly.deletingLastPathComponent().appendingPathComponent("checkpoint/model.safetensors")
        var bytes = try Data(contentsOf: url)
        let headerLength = Int(bytes.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        let header = try #require(try JSONSerialization.jsonObject(with: bytes.subdata(in: 8..<8 + headerLength)) as? [String: Any])
        let entry = try #require(header[name] as? [String: Any])
        #expect(entry["dtype"] as? String == "F16")
        let start = 8 + headerLength + (try #require((entry["data_offsets"] as? [Int])?.first)) + 2 * element
        bytes[start] = 0x00; bytes[start + 1] = 0x7e  // float16 NaN
        try bytes.write(to: url)
        return assembly
    }

    /// A NaN in the language model's final norm makes every logit NaN, one in a row of its head only
    /// that token's logit: either way `generate` stops with an error naming the model and the token,
    /// instead of emitting whatever index the sampler returns or drawing among the other tokens.
    @Test(arguments: [("model.language_model.norm.weight", 0), ("lm_head.weight", 300 * 128 + 5)],
          [[], ["--temperature", "0.8", "--top-p", "0.9"], ["--temperature", "0.8", "--top-k", "5"]])
    func nonFiniteLogitsStopGeneration(poison: (tensor: String, element: Int), sampling: [String]) throws {
        let assembly = try Self.poisonedDefaults(tensor: poison.tensor, element: poison.element)
        let r = try CLI.run(["generate", "--assembly", assembly.path, "--prompt", "hello", "--max-tokens", "4"] + sampling)
        #expect(r.status != 0 && r.stderr.contains("gave non-finite logits (NaN or infinity) for generated token 1"), "\(r.all)")
    }

    @Test func anEmptyPromptWithoutBOSIsRefused() throws {
        let assembly = try Self.defaultModel { $0["post_processor"] = NSNull() }
        let r = try CLI.run(["generate", "--assembly", assembly.path, "--prompt", ""])
        #expect(r.status != 0 && r.stderr.contains("the prompt is empty"), "\(r.all)")
    }
}
