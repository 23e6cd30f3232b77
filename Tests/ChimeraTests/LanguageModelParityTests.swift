@testable import ChimeraComponents
import ChimeraIO
import ChimeraTensor
import ChimeraTokenizers
import Foundation
import Testing
@testable import Chimera

/// A *ForCausalLM folder made by Scripts/make_lm_fixtures.py, with transformers' outputs.
struct LanguageModelFixture {
    let directory: URL
    let logits: Tensor
    let inputIDs: [Int]
    let generated: [Int]

    init(_ name: String) throws {
        directory = packageRoot.appendingPathComponent("Tests/ChimeraTests/Fixtures/\(name)")
        logits = try WeightStore(files: [directory.appendingPathComponent("reference.safetensors").path]).tensor("logits")
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: directory.appendingPathComponent("reference.json"))) as! [String: Any]
        inputIDs = json["input_ids"] as! [Int]
        generated = json["generated"] as! [Int]
    }

    /// Imports the folder into a fresh directory and builds its one language model.
    func importAndBuild() throws -> (result: ImportResult, manifest: ComponentManifest, model: any LanguageModel) {
        let result = try CheckpointImporter(checkpoint: directory, outputDirectory: temporaryDirectory()).run()
        var catalog = Catalog()
        try catalog.load(directory: result.mainPath.deletingLastPathComponent())
        let manifest = try catalog.component(directory.lastPathComponent, kind: .languageModel)
        let model = try #require(try BuiltinFamilies.registry().build(manifest) as? any LanguageModel)
        return (result, manifest, model)
    }
}

/// Greedy decoding through the KV cache, token by token after the prompt, as transformers'
/// generate(do_sample=False); stops after an EOS (kept, as transformers keeps it).
func greedyContinuation(_ model: any LanguageModel, prompt: [Int], maxNewTokens: Int, eos: Set<Int>,
                        kvCache: KVPrecision = .f32, repetitionPenalty: Float? = nil) throws -> [Int] {
    let cache = model.makeCache(capacity: prompt.count + maxNewTokens, precision: kvCache)
    var logits = try model.forward(embeddings: try model.embed(prompt), cache: cache, lastOnly: true)
    var sampler = Sampler(options: GenerationOptions(maxTokens: maxNewTokens, temperature: 0, repetitionPenalty: repetitionPenalty))
    sampler.saw(prompt)
    let row = Tensor(zeros: [1, model.hiddenSize])
    var out: [Int] = []
    while out.count < maxNewTokens {
        let token = sampler.sample(logits)
        out.append(token)
        if eos.contains(token) || out.count == maxNewTokens { break }
        try model.embed(token: token, into: row)
        logits = try model.forward(embeddings: row, cache: cache, lastOnly: true)
    }
    return out
}

@Suite struct LanguageModelParityTests {
    /// One or two per family, each with its own variant of the architecture.
    static let familyFixtures: [(name: String, family: String)] = [
        ("lm-llama", "llama"), ("lm-qwen2", "qwen2"), ("lm-gemma", "gemma"), ("lm-phi", "phi"),
        ("lm-stablelm-a", "stablelm"), ("lm-stablelm-b", "stablelm"),
    ]
    /// Scaled rotary frequencies: rope types llama3, yarn (a legacy rope_scaling) and linear.
    static let incrementalFixtures = familyFixtures + [("lm-llama-llama3", "llama"), ("lm-qwen2-yarn", "qwen2"), ("lm-phi-linear", "phi")]
    /// And dynamic scaling past its original context, whose pass rotates by its own length: a prompt
    /// fed a token at a time is not the prompt fed at once (in transformers either), so it is left
    /// out of the incremental tests; chunks of one pass rotate as the pass.
    static let fixtures = incrementalFixtures + [("lm-llama-dynamic", "llama")]

    @Test(arguments: fixtures) func importWritesOneLanguageModel(name: String, family: String) throws {
        let fixture = try LanguageModelFixture(name)
        let (result, manifest, _) = try fixture.importAndBuild()
        #expect(result.assembly == nil && result.assemblyPath == nil)
        #expect(result.componentPaths.count == 1 && result.mainPath == result.componentPaths[0])
        #expect(manifest.family == family)
        #expect(manifest.kind == .languageModel)
        #expect(manifest.tokenizer?.eosTokenIDs == [2])
        #expect(manifest.contextLength == (name == "lm-llama-dynamic" ? 16 * 4 : 128))  // dynamic: its factor stretches it
    }

    @Test(arguments: fixtures) func promptLogitsMatch(name: String, family: String) throws {
        let fixture = try LanguageModelFixture(name)
        let model = try fixture.importAndBuild().model
        let cache = model.makeCache(capacity: fixture.inputIDs.count)
        let logits = try model.forward(embeddings: try model.embed(fixture.inputIDs), cache: cache, lastOnly: false)
        #expect(logits.shape == fixture.logits.shape)
        #expect(maxAbsDifference(logits, fixture.logits) < 1e-4)
    }

    /// Half the prompt at once, then one token at a time: the KV cache and rotary positions give the
    /// same logits as the whole prompt did in transformers.
    @Test(arguments: incrementalFixtures) func incrementalLogitsMatch(name: String, family: String) throws {
        let fixture = try LanguageModelFixture(name)
        let model = try fixture.importAndBuild().model
        let ids = fixture.inputIDs, split = ids.count / 2
        let cache = model.makeCache(capacity: ids.count)
        let first = try model.forward(embeddings: try model.embed(Array(ids[..<split])), cache: cache, lastOnly: false)
        #expect(maxAbsDifference(first, fixture.logits.rows(0..<split)) < 1e-4)
        for position in split..<ids.count {
            let logits = try model.forward(embeddings: try model.embed([ids[position]]), cache: cache, lastOnly: true)
            #expect(maxAbsDifference(logits, fixture.logits.rows(position..<(position + 1))) < 1e-4, "position \(position)")
        }
    }

    /// With a float16 KV cache (keys and values rounded when stored), half the prompt at once and
    /// then one token at a time stay close to transformers' float32 logits, and greedy decoding
    /// continues as transformers does.
    @Test(arguments: incrementalFixtures) func float16CacheStaysClose(name: String, family: String) throws {
        let fixture = try LanguageModelFixture(name)
        let (_, manifest, model) = try fixture.importAndBuild()
        let ids = fixture.inputIDs, split = ids.count / 2
        let cache = model.makeCache(capacity: ids.count, precision: .f16)
        #expect(cache.bytes * 2 == model.makeCache(capacity: ids.count).bytes)
        let first = try model.forward(embeddings: try model.embed(Array(ids[..<split])), cache: cache, lastOnly: false)
        var worst = maxAbsDifference(first, fixture.logits.rows(0..<split))
        for position in split..<ids.count {
            let logits = try model.forward(embeddings: try model.embed([ids[position]]), cache: cache, lastOnly: true)
            worst = max(worst, maxAbsDifference(logits, fixture.logits.rows(position..<(position + 1))))
        }
        // Rounding every key and value (relative 2⁻¹¹) moves these random models' logits by at most
        // 0.2 % of the largest (0.015 of 7.1, lm-llama); allowed: 0.5 %.
        let largest = fixture.logits.toArray().map(abs).max() ?? 0
        #expect(worst < 5e-3 * largest, "max logit difference \(worst), largest logit \(largest)")
        let ours = try greedyContinuation(model, prompt: ids, maxNewTokens: fixture.generated.count,
                                          eos: Set(manifest.tokenizer?.eosTokenIDs ?? []), kvCache: .f16)
        #expect(ours == fixture.generated)
    }

    /// A prompt fed in chunks (the prefill bound) gives transformers' logits for every position.
    @Test(arguments: fixtures) func chunkedPrefillMatches(name: String, family: String) throws {
        let fixture = try LanguageModelFixture(name)
        let model = try #require(fixture.importAndBuild().model as? DecoderTransformer)
        model.prefillChunk = 3
        let cache = model.makeCache(capacity: fixture.inputIDs.count)
        let logits = try model.forward(embeddings: try model.embed(fixture.inputIDs), cache: cache, lastOnly: false)
        #expect(maxAbsDifference(logits, fixture.logits) < 1e-4)
        let again = model.makeCache(capacity: fixture.inputIDs.count)
        let last = try model.forward(embeddings: try model.embed(fixture.inputIDs), cache: again, lastOnly: true)
        #expect(maxAbsDifference(last, fixture.logits.rows((fixture.inputIDs.count - 1)..<fixture.inputIDs.count)) < 1e-4)
        #expect(fixture.inputIDs.count > 3 && cache.length == fixture.inputIDs.count)
    }

    /// A prompt's MLP a slice of the intermediate at a time (the default for these fixtures: 64 in
    /// two slices of 32) gives the logits of the whole intermediate at once, and transformers'.
    @Test(arguments: fixtures) func slicedMLPMatchesTheWholeIntermediate(name: String, family: String) throws {
        let fixture = try LanguageModelFixture(name)
        let model = try #require(fixture.importAndBuild().model as? DecoderTransformer)
        #expect(model.mlpSliceWidth == 32 && model.architecture.intermediateSize == 64)
        func logits() throws -> Tensor {
            try model.forward(embeddings: try model.embed(fixture.inputIDs), cache: model.makeCache(capacity: fixture.inputIDs.count),
                              lastOnly: false)
        }
        let sliced = try logits()
        model.mlpSliceWidth = 64
        let whole = try logits()
        #expect(maxAbsDifference(sliced, whole) < 1e-5)
        #expect(maxAbsDifference(sliced, fixture.logits) < 1e-4)
    }

    @Test(arguments: fixtures) func greedyContinuationIsTransformers(name: String, family: String) throws {
        let fixture = try LanguageModelFixture(name)
        let (_, manifest, model) = try fixture.importAndBuild()
        let ours = try greedyContinuation(model, prompt: fixture.inputIDs, maxNewTokens: fixture.generated.count,
                                          eos: Set(manifest.tokenizer!.eosTokenIDs))
        #expect(ours == fixture.generated)
    }

    /// transformers' generate(do_sample=False, repetition_penalty=1.5), EOS not stopping it
    /// (Scripts/make_repetition_fixtures.py); the penalty changes every fixture's answer.
    @Test(arguments: familyFixtures) func repetitionPenaltyIsTransformers(name: String, family: String) throws {
        let fixture = try LanguageModelFixture(name)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: fixture.directory.appendingPathComponent("reference_repetition.json")))
                                as? [String: Any])
        let expected = try #require(json["generated"] as? [Int]), penalty = try #require(json["repetition_penalty"] as? Double)
        let model = try fixture.importAndBuild().model
        let ours = try greedyContinuation(model, prompt: try #require(json["input_ids"] as? [Int]), maxNewTokens: expected.count, eos: [],
                                          repetitionPenalty: Float(penalty))
        #expect(ours == expected)
        #expect(expected != fixture.generated)
    }

    @Test func weightsKeepTheirCheckpointNames() throws {
        let phi = try LanguageModelFixture("lm-phi").importAndBuild().model
        let names = Set(phi.parameters.map(\.name))
        for name in ["model.layers.0.self_attn.dense.bias", "model.layers.1.mlp.fc2.weight", "model.final_layernorm.bias",
                     "lm_head.bias", "model.layers.0.input_layernorm.bias"] {
            #expect(names.contains(name), "\(name)")
        }
        let stablelm = try LanguageModelFixture("lm-stablelm-a").importAndBuild().model
        #expect(stablelm.parameters.contains { $0.name == "model.layers.1.self_attn.k_layernorm.norms.0.weight" })
        #expect(stablelm.parameters.contains { $0.name == "model.layers.1.self_attn.q_layernorm.norms.1.weight" })
    }
}

/// CLIP + Qwen2 and CLIP + Gemma run through LLaVAParityTests; here what is Gemma's own.
/// Decoding with special tokens skipped leaves out what transformers does: the tokens
/// tokenizer_config.json names (`pad_token`, `image_token`, ...) as well as those tokenizer.json
/// marks special (transformers' `decode(ids, skip_special_tokens=True)` gives "hi there" here).
@Suite struct ConfiguredSpecialTokenTests {
    @Test func tokenizerConfigNamesSpecialTokens() throws {
        let folder = packageRoot.appendingPathComponent("Tests/ChimeraTests/Fixtures/lm-llama")
        let tokenizer = try Tokenizer(url: folder.appendingPathComponent("tokenizer.json"))
        let ids = [1, 330, 329, 318, 296, 297, 318, 308, 296, 293, 306, 293, 330, 2]  // <s><pad><image> hi there<pad></s>
        #expect(try tokenizer.decode(ids, skipSpecialTokens: true) == "hi there")
        // Without the config, tokenizer.json alone keeps <pad> (not marked special there).
        let alone = try Tokenizer(data: Data(contentsOf: folder.appendingPathComponent("tokenizer.json")), name: "tokenizer.json")
        #expect(try alone.decode(ids, skipSpecialTokens: true) == "<pad> hi there<pad>")

        let broken = temporaryDirectory()
        try FileManager.default.copyItem(at: folder.appendingPathComponent("tokenizer.json"), to: broken.appendingPathComponent("tokenizer.json"))
        try Data("{\"pad_token\": ".utf8).write(to: broken.appendingPathComponent("tokenizer_config.json"))
        let message = "\((#expect(throws: TokenizerError.self) { try Tokenizer(url: broken.appendingPathComponent("tokenizer.json")) })!)"
        #expect(message.contains(broken.appendingPathComponent("tokenizer_config.json").path), "\(message)")
    }
}

@Suite struct LLaVALanguageModelTests {
    /// transformers 4.x semantics (spliced features scaled by sqrt(hidden) with everything else), as
    /// the fixture script emulates them: switched on in the imported manifest.
    @Test func gemmaCanScaleSplicedFeatures() throws {
        let fixture = try LLaVAFixture("llava-gemma")
        let out = temporaryDirectory()
        let result = try CheckpointImporter(checkpoint: fixture.directory, outputDirectory: out).run()
        let url = out.appendingPathComponent("llava-gemma-llm.component.json")
        var manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        var config = manifest["config"] as! [String: Any]
        #expect(config["scale_spliced_features"] as? Bool == false, "saved by transformers 5")
        config["scale_spliced_features"] = true
        manifest["config"] = config
        try JSONSerialization.data(withJSONObject: manifest).write(to: url)
        var catalog = Catalog()
        try catalog.load(directory: out)
        let model = try Assembler(catalog: catalog, families: BuiltinFamilies.registry()).build(try #require(result.assembly))
        let prepared = try model.prepare(prompt: fixture.prompt, inputs: [model.inputs[0].binding.placeholder: [fixture.image]])
        let cache = model.languageModel.makeCache(capacity: prepared.embeddings.rows)
        let logits = try model.languageModel.forward(embeddings: prepared.embeddings, cache: cache, lastOnly: false)
        let scaled = try fixture.reference.tensor("logits_scaled_features"), unscaled = try fixture.reference.tensor("logits")
        #expect(maxAbsDifference(logits, scaled) < 1e-4)
        #expect(maxAbsDifference(scaled, unscaled) > 0.1, "the two semantics differ on this fixture")
    }
}

@Suite struct LanguageModelImportErrorTests {
    /// Copies a fixture folder and edits its config.json.
    func editedCopy(of name: String, _ edit: (inout [String: Any]) -> Void) throws -> URL {
        let source = packageRoot.appendingPathComponent("Tests/ChimeraTests/Fixtures/\(name)")
        let copy = temporaryDirectory().appendingPathComponent(name)
        try FileManager.default.copyItem(at: source, to: copy)
        let configURL = copy.appendingPathComponent("config.json")
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: configURL)) as! [String: Any]
        edit(&config)
        try JSONSerialization.data(withJSONObject: config).write(to: configURL)
        return copy
    }

    func importError(_ folder: URL) -> String {
        do {
            _ = try CheckpointImporter(checkpoint: folder, outputDirectory: temporaryDirectory()).run()
            return "(imported)"
        } catch {
            return (error as? LocalizedError)?.errorDescription ?? "\(error)"
        }
    }

    /// Whether the output head is the embeddings follows the weights, as transformers 5 loads them:
    /// a config that ties over a stored lm_head of other values is untied (the fixture's own,
    /// untied, reference logits hold), one that unties without a stored head is tied (the tied
    /// fixture's logits hold); each with a warning.
    @Test(arguments: [("lm-llama", true, "of other values: it is used, untied, as transformers does"),
                      ("lm-qwen2", false, "is false but the weights hold no 'lm_head.weight': the embeddings are used as the output head")])
    func tyingFollowsTheWeights(name: String, configured: Bool, warning: String) throws {
        let folder = try editedCopy(of: name) { $0["tie_word_embeddings"] = configured }
        let out = temporaryDirectory()
        let result = try CheckpointImporter(checkpoint: folder, outputDirectory: out).run()
        #expect(result.warnings.contains { $0.contains("tie_word_embeddings") && $0.contains(warning) }, "\(result.warnings)")
        var catalog = Catalog()
        try catalog.load(directory: out)
        let manifest = try catalog.component(name, kind: .languageModel)
        #expect(manifest.config["tie_word_embeddings"] == .bool(!configured))
        let model = try #require(try BuiltinFamilies.registry().build(manifest) as? any LanguageModel)
        let fixture = try LanguageModelFixture(name)
        let logits = try model.forward(embeddings: try model.embed(fixture.inputIDs), cache: model.makeCache(capacity: fixture.inputIDs.count), lastOnly: false)
        #expect(maxAbsDifference(logits, fixture.logits) < 1e-4)
        // The fixtures as they are (an untied head stored, a tied one not) raise no warning.
        let untouched = try CheckpointImporter(checkpoint: packageRoot.appendingPathComponent("Tests/ChimeraTests/Fixtures/\(name)"),
                                               outputDirectory: temporaryDirectory()).run()
        #expect(!untouched.warnings.contains { $0.contains("tie_word_embeddings") })
    }

    /// A config with fewer layers than the weights hold imports (the first layers run, as in
    /// transformers) with a warning naming the layers left unused; the fixtures as they are raise none.
    @Test func layersBeyondTheConfigAreNamed() throws {
        let folder = try editedCopy(of: "lm-qwen2") { $0["num_hidden_layers"] = 1 }
        let result = try CheckpointImporter(checkpoint: folder, outputDirectory: temporaryDirectory()).run()
        #expect(result.warnings.contains { $0.contains("num_hidden_layers is 1 but the weights hold 2 layers: layer 1 is not used") }, "\(result.warnings)")
        let untouched = try CheckpointImporter(checkpoint: packageRoot.appendingPathComponent("Tests/ChimeraTests/Fixtures/lm-qwen2"),
                                               outputDirectory: temporaryDirectory()).run()
        #expect(!untouched.warnings.contains { $0.contains("num_hidden_layers") })
    }

    /// GemmaConfig's bidirectional attention (embedding models) is refused: attention is causal here.
    @Test func gemmaBidirectionalAttentionIsRefused() throws {
        let folder = try editedCopy(of: "lm-gemma") { $0["use_bidirectional_attention"] = true }
        #expect(importError(folder).contains(#"use_bidirectional_attention is true, which Chimera does not support yet (supported: false (causal attention))"#),
                "\(importError(folder))")
        #expect(importError(try editedCopy(of: "lm-gemma") { $0["use_bidirectional_attention"] = false }) == "(imported)")
    }

    @Test func checkpointWithoutTokenizerIsRefused() throws {
        let folder = try editedCopy(of: "lm-llama") { _ in }
        try FileManager.default.removeItem(at: folder.appendingPathComponent("tokenizer.json"))
        #expect(importError(folder).contains("lm-llama: tokenizer.json is missing: a language model runs with its fast tokenizer's file"))
    }

    @Test func unsupportedStandaloneModelTypeNamesTheSupportedOnes() throws {
        let folder = try editedCopy(of: "lm-qwen2") { $0["model_type"] = "mistral" }
        let message = importError(folder)
        #expect(message.contains("model_type is \"mistral\""), "\(message)")
        #expect(message.contains("\"llava\"") && message.contains("\"stablelm\"") && message.contains("\"gemma\""), "\(message)")
    }

    @Test func unsupportedLLaVATextModelIsRefused() throws {
        let folder = try editedCopy(of: "llava-qwen2") { config in
            var text = config["text_config"] as! [String: Any]
            text["model_type"] = "phi3"
            config["text_config"] = text
        }
        let message = importError(folder)
        #expect(message.contains("text_config.model_type is \"phi3\""), "\(message)")
        #expect(message.contains("\"llama\", \"phi\", \"qwen2\", \"stablelm\""), "\(message)")
    }

    /// Values of the wrong JSON type are refused naming the field, as transformers' config classes
    /// refuse them: true was read as 1 layer, "true" and null left a bias or norm out (the weights
    /// for it then unused), a rope_scaling beside rope_parameters was ignored; a negative
    /// vocab_size crashed the token-id check.
    @Test func wronglyTypedFieldsAreRefused() throws {
        let cases: [(String, (inout [String: Any]) -> Void, String)] = [
            ("lm-llama", { $0["num_hidden_layers"] = true }, "num_hidden_layers must be an integer, found true"),
            ("lm-llama", { $0["rms_norm_eps"] = true }, "rms_norm_eps must be a number, found true"),
            ("lm-stablelm-a", { $0["qk_layernorm"] = "true" }, "qk_layernorm must be true or false, found \"true\""),
            ("lm-llama", { $0["hidden_act"] = 5 }, "hidden_act must be a string, found 5"),
            ("lm-llama", { $0["tie_word_embeddings"] = 1 }, "tie_word_embeddings must be true or false, found 1"),
            ("lm-llama", { $0["bos_token_id"] = "1" }, "bos_token_id must be a token id, found \"1\""),
            ("lm-llama", { $0["max_position_embeddings"] = NSNull() }, "max_position_embeddings is missing"),
            ("lm-llama", { $0["vocab_size"] = -1 }, "vocab_size"),
            ("lm-llama", { $0["rope_scaling"] = ["rope_type": "longrope", "factor": 4] }, "rope_scaling.rope_type is \"longrope\""),
            ("lm-llama", { $0["rope_parameters"] = ["type": "linear", "factor": "4", "rope_theta": 10000] }, "rope_parameters.factor must be a number, found \"4\""),
            ("lm-llama", { $0["rope_parameters"] = ["type": "linear", "rope_theta": 10000] }, "rope_parameters.factor is missing"),
            ("lm-llama", { $0["rope_scaling"] = ["type": "llama3", "factor": 8, "low_freq_factor": 1] }, "rope_scaling.high_freq_factor is missing"),
            ("lm-llama", { $0["rope_scaling"] = ["type": "yarn", "original_max_position_embeddings": 64] }, "rope_scaling.factor is missing"),
            ("lm-llama", { $0["rope_parameters"] = "default" }, "rope_parameters must be an object, found \"default\""),
            ("llava-a", { $0["vision_feature_layer"] = true }, "vision_feature_layer must be one layer index (an integer), found true"),
            ("llava-a", { $0["projector_hidden_act"] = 3 }, "projector_hidden_act must be a string, found 3"),
            ("lm-llama", { $0["rms_norm_eps"] = 0 }, "rms_norm_eps must be a positive number, found 0"),
            ("lm-phi", { $0["layer_norm_eps"] = -1e-5 }, "layer_norm_eps must be a positive number, found -1e-05"),
            ("llava-a", { c in var v = c["vision_config"] as! [String: Any]; v["layer_norm_eps"] = 0; c["vision_config"] = v },
             "vision_config.layer_norm_eps must be a positive number, found 0"),
        ]
        for (fixture, edit, expected) in cases {
            let message = importError(try editedCopy(of: fixture, edit))
            #expect(message.contains(expected), "\(fixture) \(expected): \(message)")
        }
        // An out-of-vocabulary eos_token_id is named by the file it came from.
        let folder = try editedCopy(of: "lm-llama") { _ in }
        try #"{"eos_token_id": 99999}"#.write(to: folder.appendingPathComponent("generation_config.json"), atomically: true, encoding: .utf8)
        #expect(importError(folder).contains("token id 99999 (eos_token_id of generation_config.json) is outside the vocabulary"), "\(importError(folder))")
    }

    /// The rope types transformers has and Chimera does not are named with those it has.
    @Test func unsupportedRopeTypeIsRefused() throws {
        let folder = try editedCopy(of: "lm-phi") { config in
            config["rope_parameters"] = ["rope_type": "longrope", "factor": 2.0, "rope_theta": 10000.0]
        }
        #expect(importError(folder).contains(#"rope_parameters.rope_type is "longrope", which Chimera does not support yet (supported: "default", "dynamic", "linear", "llama3", "yarn")"#),
                "\(importError(folder))")
    }

    /// Dynamic NTK scaling is the plain rotation within max_position_embeddings, so the fixture's
    /// reference logits hold (past it: the lm-llama-dynamic fixture); import stretches the context
    /// by the factor.
    @Test func dynamicRopeWithinTheOriginalContextIsThePlainRotation() throws {
        let folder = try editedCopy(of: "lm-llama") { $0["rope_parameters"] = ["rope_type": "dynamic", "factor": 4.0, "rope_theta": 10000.0] }
        let result = try CheckpointImporter(checkpoint: folder, outputDirectory: temporaryDirectory()).run()
        var catalog = Catalog()
        try catalog.load(directory: result.mainPath.deletingLastPathComponent())
        let manifest = try catalog.component(folder.lastPathComponent, kind: .languageModel)
        #expect(manifest.config["rope_scaling"] != nil && manifest.contextLength == 128 * 4)
        let model = try #require(try BuiltinFamilies.registry().build(manifest) as? any LanguageModel)
        let fixture = try LanguageModelFixture("lm-llama")
        let cache = model.makeCache(capacity: fixture.inputIDs.count)
        let logits = try model.forward(embeddings: try model.embed(fixture.inputIDs), cache: cache, lastOnly: false)
        #expect(maxAbsDifference(logits, fixture.logits) < 1e-4)
    }

    /// An absent size is GemmaConfig's default (28 layers), as transformers reads it; the fixture's
    /// weights (2 layers) then do not fit, and the first tensor it lacks is named. A null one is
    /// refused as missing.
    @Test func missingSizeIsTransformersDefault() throws {
        let absent = try editedCopy(of: "lm-gemma") { $0["num_hidden_layers"] = nil }
        #expect(importError(absent).contains("its weights do not fit it: missing tensor 'model.layers.2.input_layernorm.weight'"), "\(importError(absent))")
        #expect(importError(absent).contains("(config.json leaves out num_hidden_layers: transformers' defaults for them were used)"), "\(importError(absent))")
        let null = try editedCopy(of: "lm-gemma") { $0["num_hidden_layers"] = NSNull() }
        #expect(importError(null).contains("config.json: num_hidden_layers is missing"), "\(importError(null))")
    }

    /// Imports a fixture, edits its language-model manifest's config, and reports what building says.
    func buildError(_ name: String, _ edit: (inout [String: Any]) -> Void) throws -> String {
        let out = temporaryDirectory()
        let result = try CheckpointImporter(checkpoint: packageRoot.appendingPathComponent("Tests/ChimeraTests/Fixtures/\(name)"),
                                            outputDirectory: out).run()
        let url = result.componentPaths[0]
        var manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        var config = manifest["config"] as! [String: Any]
        edit(&config)
        manifest["config"] = config
        try JSONSerialization.data(withJSONObject: manifest).write(to: url)
        var catalog = Catalog()
        do {
            try catalog.load(directory: out)
            _ = try BuiltinFamilies.registry().build(try catalog.component(name, kind: .languageModel))
            return "(built)"
        } catch {
            return (error as? LocalizedError)?.errorDescription ?? "\(error)"
        }
    }

    @Test(arguments: [
        ("lm-phi", "partial_rotary_factor", "0.2", "config.partial_rotary_factor: gives 3 rotary dimensions of head_dim 16"),
        ("lm-phi", "partial_rotary_factor", "1.5", "config.partial_rotary_factor: must be in (0, 1], found 1.5"),
        ("lm-phi", "qk_layernorm", "true", "config.qk_layernorm: true is not implemented for phi"),
        ("lm-stablelm-a", "kv_heads", "3", "config.kv_heads: heads 2 must be a multiple of kv_heads 3"),
        ("lm-stablelm-a", "head_dim", "8", "config.head_dim: stablelm's head_dim is hidden_size / heads (16)"),
        ("lm-gemma", "hidden_act", "\"mish\"", "config.hidden_act: unsupported activation 'mish'"),
        ("lm-qwen2", "sliding_window", "64", "config.sliding_window: sliding-window attention (window 64 < context_length 128) is not implemented"),
        ("lm-qwen2", "use_sliding_window", "true", "config.use_sliding_window: unknown field"),
        ("lm-llama", "layers", "0", "config.layers: must be positive, found 0"),
        ("lm-llama", "rope_scaling", #"{"type": "ntk", "factor": 2}"#, "config.rope_scaling.type: unsupported rope type 'ntk' (supported: dynamic, linear, llama3, yarn)"),
        ("lm-llama", "rope_scaling", #"{"type": "linear", "factor": 2, "beta_fast": 3}"#, "config.rope_scaling.beta_fast: does not apply to rope type 'linear' (its fields: factor)"),
        ("lm-llama", "rope_scaling", #"{"type": "linear", "factor": 0}"#, "config.rope_scaling.factor: must be a positive number, found 0.0"),
        ("lm-llama", "rope_scaling", #"{"type": "llama3", "factor": 8}"#, "low_freq_factor"),
        ("lm-llama", "rope_scaling", #"{"type": "llama3", "factor": 8, "low_freq_factor": 4, "high_freq_factor": 1, "original_max_position_embeddings": 64}"#,
         "config.rope_scaling.high_freq_factor: must be greater than low_freq_factor 4.0, found 1.0"),
    ])
    func badConfigValuesAreNamed(name: String, field: String, json: String, expected: String) throws {
        let value = try JSONSerialization.jsonObject(with: Data(json.utf8), options: .fragmentsAllowed)
        let message = try buildError(name) { $0[field] = value }
        #expect(message.contains(expected), "\(message)")
    }

    /// Dynamic scaling raises the base to the power dim / (dim - 2): two rotary dimensions are refused.
    @Test func dynamicScalingOfTwoRotaryDimensionsIsRefused() throws {
        let message = try buildError("lm-stablelm-a") { config in
            config["partial_rotary_factor"] = 0.125  // 2 of 16
            config["rope_scaling"] = ["type": "dynamic", "factor": 2, "original_max_position_embeddings": 64]
        }
        #expect(message.contains("config.rope_scaling: dynamic scaling needs more than 2 rotary dimensions"), "\(message)")
    }

    @Test func slidingWindowAsLongAsTheContextIsAccepted() throws {
        #expect(try buildError("lm-qwen2") { $0["sliding_window"] = 128 } == "(built)")
    }

    @Test func standaloneImportOfQwen2WithSlidingWindowIsRefusedWhenItMatters() throws {
        let folder = try editedCopy(of: "lm-qwen2") { config in
            config["use_sliding_window"] = true
            config["sliding_window"] = 16
            config["layer_types"] = ["full_attention", "sliding_attention"]  // a layer that slides (Qwen2Config)
        }
        // Refused by import itself, before it writes a manifest every later command would refuse.
        let out = temporaryDirectory()
        var message = "(imported)"
        do { _ = try CheckpointImporter(checkpoint: folder, outputDirectory: out).run() } catch { message = (error as? LocalizedError)?.errorDescription ?? "\(error)" }
        #expect(message.contains("config.json: the manifest of 'lm-qwen2' made from it would be refused (nothing was written)")
                && message.contains("sliding-window attention (window 16 < context_length 128) is not implemented"), "\(message)")
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: out.path)) ?? []).isEmpty)
    }

    /// Config values every command would refuse in the manifest are refused at import, named by the
    /// config's field; values of the wrong type are named as such rather than dropped or "missing".
    @Test(arguments: [
        (#"max_position_embeddings"#, "0", "context_length: must be positive and at most 16777216, found 0 (the config's max_position_embeddings)"),
        (#"num_attention_heads"#, "0", "config.heads: must be positive, found 0 (the config's num_attention_heads)"),
        (#"num_key_value_heads"#, "3", "config.kv_heads: heads 4 must be a multiple"),
        (#"num_key_value_heads"#, #""2""#, "config.json: num_key_value_heads must be an integer, found \"2\""),
        (#"hidden_size"#, "32.5", "config.json: hidden_size must be an integer, found 32.5"),
        (#"max_position_embeddings"#, #""abc""#, "config.json: max_position_embeddings must be an integer, found \"abc\""),
        (#"rope_parameters"#, #"{"rope_type": "default", "rope_theta": "x"}"#, "config.json: rope_parameters.rope_theta must be a number, found \"x\""),
        (#"eos_token_id"#, "100000", "token id 100000 (eos_token_id of config.json) is outside the vocabulary of"),
        (#"eos_token_id"#, #""x""#, "config.json: eos_token_id must be a token id or a list of token ids, found \"x\""),
        (#"vision_feature_layer"#, "10", "inputs[0].feature_layer: 10 is out of range: encoder 'llava-a-vision' has 4 hidden states (-4...3) (the config's vision_feature_layer)"),
    ])
    func badConfigValuesAreRefusedAtImport(field: String, json: String, expected: String) throws {
        if field == "vision_feature_layer" {  // (a LLaVA checkpoint's)
            let message = importError(try editedCopy(of: "llava-a") { $0[field] = Int(json)! })
            #expect(message.contains(expected), "\(message)")
            return
        }
        let value = try JSONSerialization.jsonObject(with: Data(json.utf8), options: .fragmentsAllowed)
        let folder = try editedCopy(of: "lm-llama") { $0[field] = value }
        // (generation_config.json's eos_token_id would win over the config's.)
        try FileManager.default.removeItem(at: folder.appendingPathComponent("generation_config.json"))
        let message = importError(folder)
        #expect(message.contains(expected), "\(message)")
    }
}

@Suite struct LanguageModelImportMappingTests {
    func config(_ name: String, _ edit: (inout [String: Any]) -> Void = { _ in }) throws -> [String: Any] {
        let url = packageRoot.appendingPathComponent("Tests/ChimeraTests/Fixtures/\(name)/config.json")
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        edit(&config)
        return config
    }

    func mapped(_ text: [String: Any], section: String = "", version: Int? = nil) throws -> [String: JSONValue] {
        let manifest = try LanguageModelImport.manifest(id: "x", text: text, section: section, file: "config.json", transformersVersion: version)
        guard case let .object(object) = manifest.config else { Issue.record("config is not an object"); return [:] }
        return object
    }

    @Test func olderConfigsWithTopLevelRopeFieldsMap() throws {
        let text = try config("lm-phi") { c in
            c["rope_parameters"] = nil
            c["rope_theta"] = 500.0
            c["partial_rotary_factor"] = 0.5
        }
        let object = try mapped(text)
        #expect(object["rope_theta"] == .number(500))
        #expect(object["partial_rotary_factor"] == .number(0.5))
    }

    @Test func legacyGemmaGeluMeansTheTanhApproximation() throws {
        let text = try config("lm-gemma") { c in
            c["hidden_activation"] = nil
            c["hidden_act"] = "gelu"
        }
        #expect(try mapped(text)["hidden_act"] == .string("gelu_pytorch_tanh"))
        // GemmaConfig runs hidden_act; hidden_activation is not read (transformers 5).
        let both = try config("lm-gemma") { c in c["hidden_activation"] = "gelu_pytorch_tanh"; c["hidden_act"] = "silu" }
        #expect(try mapped(both)["hidden_act"] == .string("silu"))
        #expect(try mapped(text)["scale_spliced_features"] == nil)
        #expect(try mapped(text, section: "text_config", version: 4)["scale_spliced_features"] == .bool(true))
        #expect(try mapped(text, section: "text_config", version: 5)["scale_spliced_features"] == .bool(false))
    }

    @Test func qwen2SlidingWindowIsKeptOnlyWhenUsed() throws {
        let off = try config("lm-qwen2") { c in c["use_sliding_window"] = false; c["sliding_window"] = 16 }
        #expect(try mapped(off)["sliding_window"] == nil)
        // With use_sliding_window, as Qwen2Config: only when some layer slides (layer_types, or
        // from max_window_layers on — 28 by default, past this 2-layer model).
        let allFull = try config("lm-qwen2") { c in c["use_sliding_window"] = true; c["sliding_window"] = 16 }
        #expect(allFull["layer_types"] as? [String] == ["full_attention", "full_attention"])
        #expect(try mapped(allFull)["sliding_window"] == nil)
        let marked = try config("lm-qwen2") { c in
            c["use_sliding_window"] = true; c["sliding_window"] = 16; c["layer_types"] = ["full_attention", "sliding_attention"]
        }
        #expect(try mapped(marked)["sliding_window"] == .number(16))
        let byDefault = try config("lm-qwen2") { c in c["use_sliding_window"] = true; c["sliding_window"] = 16; c["layer_types"] = nil }
        #expect(try mapped(byDefault)["sliding_window"] == nil)
        let fromLayer1 = try config("lm-qwen2") { c in
            c["use_sliding_window"] = true; c["sliding_window"] = 16; c["layer_types"] = nil; c["max_window_layers"] = 1
        }
        #expect(try mapped(fromLayer1)["sliding_window"] == .number(16))
    }

    /// transformers reads a non-empty rope_scaling over rope_parameters (whose theta is then
    /// unused), and resolves YaRN's defaults: the attention factor from mscale and mscale_all_dim,
    /// beta_fast and beta_slow where they are 0 or null, a null factor from the two contexts.
    @Test func ropeScalingResolvesAsTransformers() throws {
        let yarn = try mapped(try config("lm-qwen2-yarn") { c in
            c["rope_parameters"] = ["rope_type": "default", "rope_theta": 5.0]
            c["rope_scaling"] = ["type": "yarn", "factor": NSNull(), "original_max_position_embeddings": 32,
                                 "mscale": 2.0, "mscale_all_dim": 1.0, "beta_fast": 0, "beta_slow": NSNull()]
        })
        #expect(yarn["rope_theta"] == .number(100))
        let factor = 128.0 / 32, expected = (0.2 * log(factor) + 1) / (0.1 * log(factor) + 1)
        #expect(yarn["rope_scaling"] == .object(["type": .string("yarn"), "factor": .number(factor), "original_max_position_embeddings": .number(32),
                                                 "attention_factor": .number(expected), "beta_fast": .number(32), "beta_slow": .number(1),
                                                 "truncate": .bool(true)]))
        // A factor past any context stretches it to the bound, not past Int's.
        let huge = try LanguageModelImport.manifest(id: "x", text: try config("lm-llama") {
            $0["rope_parameters"] = ["rope_type": "dynamic", "factor": 1e300, "rope_theta": 10000.0]
        }, section: "", file: "config.json")
        #expect(huge.contextLength == SizeLimits.tokens)
        // An empty rope_scaling leaves rope_parameters in charge; dynamic scales past max_position_embeddings.
        let dynamic = try mapped(try config("lm-llama") { c in
            c["rope_scaling"] = [String: Any]()
            c["rope_parameters"] = ["rope_type": "dynamic", "factor": 2.0, "rope_theta": 500.0, "original_max_position_embeddings": 16]
        })
        #expect(dynamic["rope_theta"] == .number(500))
        #expect(dynamic["rope_scaling"] == .object(["type": .string("dynamic"), "factor": .number(2), "original_max_position_embeddings": .number(128)]))
    }
}

/// Configs saved by transformers 4 name only what differs from their config class's defaults
/// (llava-hf/llava-1.5-7b-hf's text_config has no hidden_size): import reads an absent field as
/// transformers does, from ConfigDefaults, whose table is transformers' own
/// (Scripts/make_config_defaults_fixture.py → Fixtures/config_defaults.json).
@Suite struct ConfigDefaultsTests {
    nonisolated(unsafe) static let defaults: [String: [String: Any]] = {  // read only
        let url = packageRoot.appendingPathComponent("Tests/ChimeraTests/Fixtures/config_defaults.json")
        return (try? JSONSerialization.jsonObject(with: Data(contentsOf: url))) as? [String: [String: Any]] ?? [:]
    }()

    static func same(_ a: Any, _ b: Any) -> Bool {
        if let x = a as? String, let y = b as? String { return x == y }
        if let x = a as? NSNumber, let y = b as? NSNumber { return x.doubleValue == y.doubleValue }
        return false
    }

    @Test func tableIsTransformers() {
        #expect(Set(ConfigDefaults.byModelType.keys) == Set(Self.defaults.keys) && Self.defaults.count == 7)
        for (type, expected) in Self.defaults {
            let table = ConfigDefaults.byModelType[type] ?? [:]
            #expect(Set(table.keys) == Set(expected.keys), "\(type)")
            for (key, value) in expected { #expect(table[key].map { Self.same($0, value) } == true, "\(type).\(key): \(String(describing: table[key])) vs \(value)") }
        }
    }

    /// Every key equal to its class default taken out, as transformers 4's to_diff_dict writes.
    static func stripped(_ config: [String: Any]) -> [String: Any] {
        var out = config
        if let type = config["model_type"] as? String, let defaults = Self.defaults[type] {
            for (key, value) in defaults where out[key].map({ same($0, value) }) == true { out[key] = nil }
        }
        for key in ["text_config", "vision_config"] { if let nested = config[key] as? [String: Any] { out[key] = stripped(nested) } }
        return out
    }

    @Test(arguments: LanguageModelParityTests.fixtures.map(\.name) + LLaVAParityTests.fixtures + ["tinyllava-phi-siglip"])
    func aDiffConfigImportsAsTheFullOne(name: String) throws {
        let source = packageRoot.appendingPathComponent("Tests/ChimeraTests/Fixtures/\(name)")
        let copy = temporaryDirectory().appendingPathComponent(name)
        try FileManager.default.copyItem(at: source, to: copy)
        let configURL = copy.appendingPathComponent("config.json")
        let full = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: configURL)) as? [String: Any])
        let diff = Self.stripped(full)
        try JSONSerialization.data(withJSONObject: diff).write(to: configURL)
        let removed = (full.count - diff.count) + ((full["text_config"] as? [String: Any])?.count ?? 0) - ((diff["text_config"] as? [String: Any])?.count ?? 0)
            + ((full["vision_config"] as? [String: Any])?.count ?? 0) - ((diff["vision_config"] as? [String: Any])?.count ?? 0)
        #expect(removed > 0, "\(name): nothing equal to a default")
        func components(_ folder: URL) throws -> [String: JSONValue] {
            let result = try CheckpointImporter(checkpoint: folder, outputDirectory: temporaryDirectory()).run()
            var configs: [String: JSONValue] = [:]
            for path in result.componentPaths {
                let manifest = try JSONDecoder().decode(ComponentManifest.self, from: Data(contentsOf: path))
                configs[manifest.id] = manifest.config
                configs[manifest.id + " context"] = manifest.contextLength.map { .number(Double($0)) } ?? .null
                configs[manifest.id + " eos"] = .array((manifest.tokenizer?.eosTokenIDs ?? []).map { .number(Double($0)) })
                configs[manifest.id + " bos"] = manifest.tokenizer?.bosTokenID.map { .number(Double($0)) } ?? .null
            }
            return configs
        }
        #expect(try components(copy) == components(source), "\(name)")
        // A size left out of a nested section is its default too, wherever import reads it (the
        // projector's widths included): the tiny weights then do not fit 4096 / 768 wide parts.
        if name == "llava-a" || name == "tinyllava-phi-siglip" {
            for section in ["text_config", "vision_config"] {
                var edited = full
                var nested = try #require(edited[section] as? [String: Any])
                nested["hidden_size"] = nil
                edited[section] = nested
                try JSONSerialization.data(withJSONObject: edited).write(to: configURL)
                let error = #expect(throws: (any Error).self) { _ = try CheckpointImporter(checkpoint: copy, outputDirectory: temporaryDirectory()).run() }
                let message = (error as? LocalizedError)?.errorDescription ?? "\(String(describing: error))"
                #expect(!message.contains("hidden_size is missing") && message.contains("its weights do not fit it")
                        && message.contains("config.json leaves out \(section).hidden_size: transformers' defaults for them were used"),
                        "\(name) \(section): \(message)")
            }
            try JSONSerialization.data(withJSONObject: diff).write(to: configURL)
        }
        // A LLaVA text_config that does not say its model_type is LlavaConfig's "llama".
        if name == "llava-a" {
            var untyped = diff
            var text = try #require(untyped["text_config"] as? [String: Any])
            #expect(text["model_type"] as? String == "llama")
            text["model_type"] = nil
            untyped["text_config"] = text
            try JSONSerialization.data(withJSONObject: untyped).write(to: configURL)
            #expect(try components(copy) == components(source))
        }
    }
}
