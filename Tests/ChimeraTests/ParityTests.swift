import ChimeraComponents
import ChimeraIO
import ChimeraTensor
import Foundation
import Testing
@testable import Chimera

/// A checkpoint folder made by Scripts/make_llava_fixtures.py, with transformers' outputs.
struct LLaVAFixture {
    let directory: URL
    let reference: WeightStore
    let prompt: String
    let inputIDs: [Int]
    let generated: [Int]
    let maxNewTokens: Int

    init(_ name: String) throws {
        directory = packageRoot.appendingPathComponent("Tests/ChimeraTests/Fixtures/\(name)")
        reference = try WeightStore(files: [directory.appendingPathComponent("reference.safetensors").path])
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: directory.appendingPathComponent("reference.json"))) as! [String: Any]
        prompt = json["prompt"] as! String
        inputIDs = json["input_ids"] as! [Int]
        generated = json["generated"] as! [Int]
        maxNewTokens = json["max_new_tokens"] as! Int
    }

    var image: URL { directory.appendingPathComponent("sample.png") }

    /// Imports the checkpoint into a fresh folder and builds the assembly from it.
    /// The checkpoint imported into a temporary folder: its manifests and assembly.
    func imported() throws -> (catalog: Catalog, assembly: AssemblyManifest) {
        let out = temporaryDirectory()
        let result = try CheckpointImporter(checkpoint: directory, outputDirectory: out).run()
        var catalog = Catalog()
        try catalog.load(directory: out)
        return (catalog, try #require(result.assembly))
    }

    func importAndBuild() throws -> AssembledModel {
        let (catalog, assembly) = try imported()
        return try Assembler(catalog: catalog, families: BuiltinFamilies.registry()).build(assembly)
    }
}

let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

func temporaryDirectory() -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("chimera-test-\(UUID().uuidString)")
    try! FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// Slice `index` of the first dimension.
func slice(_ t: Tensor, _ index: Int) -> Tensor {
    let inner = Array(t.shape.dropFirst())
    let size = inner.reduce(1, *)
    return Tensor(shape: inner, values: Array(UnsafeBufferPointer(start: t.data + index * size, count: size)))
}

@Suite struct LLaVAParityTests {
    /// llava-qwen2 and llava-gemma (Scripts/make_lm_fixtures.py) pair CLIP with other language models.
    static let fixtures = ["llava-a", "llava-b", "llava-qwen2", "llava-gemma", "llava-phi", "llava-stablelm"]

    @Test(arguments: fixtures) func imagePreprocessingMatchesTheProcessor(name: String) throws {
        let fixture = try LLaVAFixture(name)
        let model = try fixture.importAndBuild()
        let pixels = try model.inputs[0].encoder.prepareInput(contentsOf: fixture.image)
        let expected = try fixture.reference.tensor("pixel_values")
        #expect(pixels.shape == expected.shape)
        // Same uint8 pixels after PIL-exact bicubic resampling; what remains is float rounding.
        #expect(maxAbsDifference(pixels, expected) < 1e-5)
    }

    @Test(arguments: fixtures) func visionHiddenStatesMatch(name: String) throws {
        let fixture = try LLaVAFixture(name)
        let encoder = try fixture.importAndBuild().inputs[0].encoder
        let pixels = try fixture.reference.tensor("pixel_values")
        let expected = try fixture.reference.tensor("vision_hidden_states")
        #expect(expected.shape[0] == encoder.hiddenStateCount)
        for layer in 0..<encoder.hiddenStateCount {
            let ours = try encoder.hiddenState(pixels, layer: layer)
            #expect(maxAbsDifference(ours, slice(expected, layer)) < 1e-4, "layer \(layer)")
        }
        // Negative layers count from the end.
        let fromEnd = try encoder.hiddenState(pixels, layer: -2)
        #expect(maxAbsDifference(fromEnd, try encoder.hiddenState(pixels, layer: encoder.hiddenStateCount - 2)) == 0)
        #expect(throws: EncoderError.self) { try encoder.hiddenState(pixels, layer: encoder.hiddenStateCount) }
    }

    @Test(arguments: fixtures) func projectorOutputMatches(name: String) throws {
        let fixture = try LLaVAFixture(name)
        let input = try fixture.importAndBuild().inputs[0]
        let hidden = try fixture.reference.tensor("vision_hidden_states")
        let selected = slice(hidden, hidden.shape[0] - 2)
        let projected = try input.connector.forward(selected.rows(1..<selected.shape[0]))
        #expect(maxAbsDifference(projected, try fixture.reference.tensor("projected")) < 1e-4)
    }

    @Test(arguments: fixtures) func promptTokensAndLogitsMatch(name: String) throws {
        let fixture = try LLaVAFixture(name)
        let (catalog, assembly) = try fixture.imported()
        let model = try Assembler(catalog: catalog, families: BuiltinFamilies.registry()).build(assembly)
        let placeholder = model.inputs[0].binding.placeholder
        let prepared = try model.prepare(prompt: fixture.prompt, inputs: [placeholder: [fixture.image]])
        #expect(prepared.tokens == fixture.inputIDs)
        // What `generate --show-tokens` shows, from the manifests alone, is that same sequence.
        let layout = try PromptLayout(fixture.prompt, assembly: assembly, catalog: catalog, families: BuiltinFamilies.registry(),
                                      tokenizer: model.tokenizer, inputs: [placeholder: [fixture.image]])
        #expect(layout.tokens == fixture.inputIDs && layout.context == model.languageModel.contextLength)
        let cache = model.languageModel.makeCache(capacity: prepared.embeddings.rows)
        let logits = try model.languageModel.forward(embeddings: prepared.embeddings, cache: cache, lastOnly: false)
        let expected = try fixture.reference.tensor("logits")
        #expect(logits.shape == expected.shape)
        #expect(maxAbsDifference(logits, expected) < 1e-4)
    }

    @Test(arguments: fixtures) func greedyContinuationIsTransformers(name: String) throws {
        let fixture = try LLaVAFixture(name)
        let model = try fixture.importAndBuild()
        let result = try model.generate(prompt: fixture.prompt, inputs: [model.inputs[0].binding.placeholder: [fixture.image]],
                                        options: GenerationOptions(maxTokens: fixture.maxNewTokens, temperature: 0))
        // transformers keeps the EOS it stopped at; Chimera reports it as the stop reason.
        let ours = result.stopReason == "eos" ? result.tokens + [model.eosTokenIDs.min()!] : result.tokens
        #expect(ours == fixture.generated)
    }

    @Test func embeddedDefaultMatchesItsReference() throws {
        let directory = packageRoot.appendingPathComponent("manifests/default")
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: directory.appendingPathComponent("checkpoint/reference.json"))) as! [String: Any]
        var catalog = Catalog()
        try catalog.load(directory: directory)
        let model = try Assembler(catalog: catalog, families: BuiltinFamilies.registry()).build(try catalog.assembly("chimera-tiny-default"))
        let result = try model.generate(prompt: json["prompt"] as! String,
                                        inputs: ["<image>": [directory.appendingPathComponent("checkpoint/sample.png")]],
                                        options: GenerationOptions(maxTokens: json["max_new_tokens"] as! Int))
        #expect(result.tokens == json["generated"] as! [Int])
    }

    @Test func weightsStayMemoryMappedAndNamed() throws {
        let model = try LLaVAFixture("llava-a").importAndBuild()
        let names = model.parameters.map(\.name)
        #expect(names.contains("llava-a-llm/model.language_model.layers.0.self_attn.q_proj.weight"))
        #expect(names.contains("llava-a-llm/lm_head.weight"))
        #expect(names.contains("llava-a-projector/model.multi_modal_projector.linear_2.bias"))
        #expect(Set(names).count == names.count)
    }
}

@Suite struct GenerationErrorTests {
    @Test func promptOverTheContextIsRefused() throws {
        let fixture = try LLaVAFixture("llava-b")
        let model = try fixture.importAndBuild()
        #expect(throws: PromptError.self) {
            try model.generate(prompt: fixture.prompt, inputs: ["<image>": [fixture.image]], options: GenerationOptions(maxTokens: 10_000))
        }
        let long = String(repeating: "The quick brown fox. ", count: 200)
        do {
            _ = try model.generate(prompt: long, options: GenerationOptions(maxTokens: 1))
            Issue.record("an over-long prompt was accepted")
        } catch let error as PromptError {
            #expect(error.errorDescription!.contains("longer than the context length of 128: shorten the prompt"), "\(error.errorDescription!)")
        }
        // The length is refused before the text is embedded (prepare throws it), with the image's
        // rows counted: a megabyte of prompt no longer becomes its embeddings first.
        for (text, inputs) in [(long, [String: [URL]]()), ("<image>" + long, ["<image>": [fixture.image]])] {
            do {
                _ = try model.prepare(prompt: text, inputs: inputs)
                Issue.record("prepare accepted an over-long prompt")
            } catch let error as PromptError {
                #expect(error.errorDescription!.contains("longer than the context length of 128"), "\(error.errorDescription!)")
            }
        }
        // Far beyond the context (over four contexts' worth), tokenizing stops and says so.
        do {
            _ = try model.prepare(prompt: String(repeating: long, count: 50), inputs: [:])
            Issue.record("prepare accepted a prompt of 10,000 sentences")
        } catch let error as PromptError {
            #expect(error.errorDescription == "the prompt is more than 512 tokens, longer than the context length of 128: shorten the prompt")
        }
        // A prompt that fills the context exactly leaves no room for a new token (and says so,
        // rather than "at most 0 new tokens fit").
        let candidates = (1...200).lazy.flatMap { n in ["", ".", " a"].map { String(repeating: "fox ", count: n) + $0 } }
        let filling = try #require(candidates.first { (try? model.prepare(prompt: $0, inputs: [:]))?.embeddings.rows == 128 })
        do {
            _ = try model.generate(prompt: filling, options: GenerationOptions(maxTokens: 1))
            Issue.record("a prompt filling the context was given a new token")
        } catch let error as PromptError {
            #expect(error.errorDescription!.contains("the whole context length of 128: no new token fits"), "\(error.errorDescription!)")
        }
        // A few positions left: an answer length asked for is refused, a default one bounded by the room.
        let nearlyFilling = try #require(candidates.first { (120...126).contains((try? model.prepare(prompt: $0, inputs: [:]))?.embeddings.rows ?? 0) })
        let room = 128 - (try model.prepare(prompt: nearlyFilling, inputs: [:])).embeddings.rows
        do {
            _ = try model.generate(prompt: nearlyFilling, options: GenerationOptions(maxTokens: 64))
            Issue.record("64 new tokens were given \(room) positions")
        } catch let error as PromptError {
            #expect(error.errorDescription!.contains("(at most \(room) new tokens fit)"), "\(error.errorDescription!)")
        }
        var fitting = GenerationOptions(maxTokens: 64)
        fitting.fitsAnswerToContext = true
        let bounded = try model.generate(prompt: nearlyFilling, options: fitting)
        #expect(bounded.stopReason == "context_length" ? bounded.tokens.count == room : bounded.tokens.count < room && bounded.stopReason == "eos",
                "\(bounded.stopReason) after \(bounded.tokens.count)")
    }

    @Test func placeholderAndInputCountsMustAgree() throws {
        let fixture = try LLaVAFixture("llava-a")
        let model = try fixture.importAndBuild()
        do {
            _ = try model.generate(prompt: "no placeholder here", inputs: ["<image>": [fixture.image]], options: GenerationOptions(maxTokens: 1))
            Issue.record("an image without a placeholder was accepted")
        } catch let error as PromptError {
            #expect(error.errorDescription!.contains("0 <image> placeholders but 1 input was given"))
        }
        #expect(throws: PromptError.self) {
            try model.generate(prompt: "<image> <image>", inputs: ["<image>": [fixture.image]], options: GenerationOptions(maxTokens: 1))
        }
        #expect(throws: PromptError.self) {
            try model.generate(prompt: "<audio>", inputs: ["<audio>": [fixture.image]], options: GenerationOptions(maxTokens: 1))
        }
    }

    @Test func unreadableImageNamesTheFile() throws {
        let fixture = try LLaVAFixture("llava-a")
        let model = try fixture.importAndBuild()
        let bad = temporaryDirectory().appendingPathComponent("photo.png")
        try Data("not an image at all".utf8).write(to: bad)
        do {
            _ = try model.generate(prompt: "<image>", inputs: ["<image>": [bad]], options: GenerationOptions(maxTokens: 1))
            Issue.record("garbage was decoded as an image")
        } catch {
            #expect((error as? LocalizedError)?.errorDescription?.contains("photo.png") == true)
        }
    }

    @Test func samplingIsSeededAndRespectsTopK() throws {
        let fixture = try LLaVAFixture("llava-a")
        let model = try fixture.importAndBuild()
        let options = GenerationOptions(maxTokens: 8, temperature: 1.5, topK: 5, topP: 0.9, seed: 7)
        let a = try model.generate(prompt: "Describe the picture", options: options)
        let b = try model.generate(prompt: "Describe the picture", options: options)
        #expect(a.tokens == b.tokens)
        // top-k 1 is greedy whatever the temperature.
        let greedy = try model.generate(prompt: "Describe the picture", options: GenerationOptions(maxTokens: 8))
        let topOne = try model.generate(prompt: "Describe the picture", options: GenerationOptions(maxTokens: 8, temperature: 2, topK: 1, seed: 3))
        #expect(greedy.tokens == topOne.tokens)
        #expect(throws: PromptError.self) { try model.generate(prompt: "x", options: GenerationOptions(maxTokens: 1, topP: 1.5)) }
    }
}

@Suite struct ImportErrorTests {
    func copyFixture(_ name: String) throws -> URL {
        let dir = temporaryDirectory().appendingPathComponent(name)
        try FileManager.default.copyItem(at: packageRoot.appendingPathComponent("Tests/ChimeraTests/Fixtures/\(name)"), to: dir)
        return dir
    }

    func editConfig(_ dir: URL, _ edit: (inout [String: Any]) throws -> Void) throws {
        let url = dir.appendingPathComponent("config.json")
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        try edit(&config)
        try JSONSerialization.data(withJSONObject: config).write(to: url)
    }

    func importError(_ dir: URL) -> String {
        do {
            _ = try CheckpointImporter(checkpoint: dir, outputDirectory: temporaryDirectory()).run()
            return "(no error)"
        } catch { return (error as? LocalizedError)?.errorDescription ?? "\(error)" }
    }

    @Test func unsupportedArchitecturesAreNamed() throws {
        let dir = try copyFixture("llava-a")
        try editConfig(dir) { config in
            var text = config["text_config"] as! [String: Any]
            text["model_type"] = "mistral"
            config["text_config"] = text
        }
        let message = importError(dir)
        #expect(message.contains("text_config.model_type") && message.contains("mistral") && message.contains("llama"))

        try editConfig(dir) { $0["model_type"] = "qwen2_vl" }
        #expect(importError(dir).contains("model_type is \"qwen2_vl\""))

        let pixtral = try copyFixture("llava-b")
        try editConfig(pixtral) { config in
            var vision = config["vision_config"] as! [String: Any]
            vision["model_type"] = "pixtral"
            config["vision_config"] = vision
        }
        let visionMessage = importError(pixtral)
        #expect(visionMessage.contains("vision_config.model_type") && visionMessage.contains("pixtral")
                && visionMessage.contains("siglip_vision_model"))
    }

    @Test func missingWeightsAndTokenizerAreReported() throws {
        let dir = try copyFixture("llava-a")
        try FileManager.default.removeItem(at: dir.appendingPathComponent("model.safetensors"))
        #expect(importError(dir).contains("no *.safetensors"))
        let other = try copyFixture("llava-b")
        try FileManager.default.removeItem(at: other.appendingPathComponent("tokenizer.json"))
        #expect(importError(other).contains("tokenizer.json"))
    }

    @Test func truncatedWeightsFailAtBuildNamingTheFile() throws {
        let dir = try copyFixture("llava-a")
        let weights = dir.appendingPathComponent("model.safetensors")
        let data = try Data(contentsOf: weights)
        try data.prefix(data.count / 2).write(to: weights)
        #expect(importError(dir).contains("model.safetensors"))
    }
}

/// A LLaVA checkpoint's own chat template, when it is llava-hf's LLaVA-1.5 one, becomes the
/// imported assembly's "llava" (so `generate --chat` needs no --template); another is written as
/// the checkpoint's own Jinja template, or named in a warning when Chimera cannot render it; none
/// leaves the assembly without one.
@Suite struct LLaVAChatTemplateImportTests {
    func importing(chatTemplate file: (name: String, text: String)?) throws -> ImportResult {
        let source = packageRoot.appendingPathComponent("Tests/ChimeraTests/Fixtures/llava-a")
        let copy = temporaryDirectory().appendingPathComponent("llava-a")
        try FileManager.default.copyItem(at: source, to: copy)
        if let file { try file.text.write(to: copy.appendingPathComponent(file.name), atomically: true, encoding: .utf8) }
        return try CheckpointImporter(checkpoint: copy, outputDirectory: temporaryDirectory()).run()
    }

    @Test func llavaHFTemplateIsRecognised() throws {
        let fixture = packageRoot.appendingPathComponent("Tests/ChimeraTests/Fixtures/templates/llava_hf.json")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: fixture)) as? [String: Any])
        let template = try #require(object["chat_template"] as? String)
        let json = String(decoding: try JSONSerialization.data(withJSONObject: ["chat_template": template]), as: UTF8.self)
        let recognised = try importing(chatTemplate: ("chat_template.json", json))
        #expect(recognised.assembly?.chatTemplate == "llava" && recognised.warnings.isEmpty, "\(recognised.warnings)")
        let jinja = try importing(chatTemplate: ("chat_template.jinja", template))
        #expect(jinja.assembly?.chatTemplate == "llava")
        // transformers 4's list of named templates: the "default" one.
        let list = String(decoding: try JSONSerialization.data(withJSONObject: ["chat_template": [["name": "tool_use", "template": "{{ x }}"],
                                                                                                  ["name": "default", "template": template]]]), as: UTF8.self)
        #expect(try importing(chatTemplate: ("tokenizer_config.json", list)).assembly?.chatTemplate == "llava")
        let odd = try importing(chatTemplate: ("chat_template.json", "{\"chat_template\": 5}"))
        #expect(odd.assembly?.chatTemplate == nil && odd.warnings.contains { $0.contains("chat_template is neither a template nor a list") }, "\(odd.warnings)")

        // Another is written as the checkpoint's own Jinja template, its turns given as content parts.
        let other = try importing(chatTemplate: ("chat_template.jinja", "{% for m in messages %}{% for p in m['content'] %}{{ p.type }}{% endfor %}{% endfor %}"))
        #expect(other.assembly?.chatTemplate == "llava-a-chat" && other.warnings.isEmpty, "\(other.warnings)")
        let written = try #require(other.templatePath)
        guard case .template(let template) = try AnyManifest.load(contentsOf: written) else { Issue.record("not a template"); return }
        #expect(template.contentParts == ["<image>": "image"])
        #expect(try template.render([ChatTurn(role: "user", content: "<image>\nWhat is it?")]) == "imagetext")
        let unreadable = try importing(chatTemplate: ("chat_template.jinja", "{% include 'x.jinja' %}"))
        #expect(unreadable.assembly?.chatTemplate == nil && unreadable.templatePath == nil)
        #expect(unreadable.warnings.contains { $0.contains("chat_template.jinja: its chat_template is Jinja Chimera does not render (line 1: the statement {% include %} is not supported") },
                "\(unreadable.warnings)")
        let none = try importing(chatTemplate: nil)
        #expect(none.assembly?.chatTemplate == nil && !none.warnings.contains { $0.contains("chat_template") })
    }
}

/// Under a repetition penalty, greedy continuations equal transformers' for both kinds of
/// multimodal prompt (Scripts/make_repetition_fixtures.py): LLaVA's, whose input_ids (the image
/// token once a feature row included) are all counted, and TinyLLaVA's, generated from
/// inputs_embeds, where only the answer is.
@Suite struct MultimodalRepetitionPenaltyTests {
    @Test(arguments: ["llava-a", "tinyllava-phi-siglip"]) func penalisedGreedyIsTransformers(name: String) throws {
        let fixture = try LLaVAFixture(name)
        let reference = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: fixture.directory.appendingPathComponent("reference_repetition.json"))) as? [String: Any])
        let penalty = try #require(reference["repetition_penalty"] as? Double)
        let expected = try #require(reference["generated"] as? [Int])
        let model = try fixture.importAndBuild()
        let result = try model.generate(prompt: fixture.prompt, inputs: [model.inputs[0].binding.placeholder: [fixture.image]],
                                        options: GenerationOptions(maxTokens: expected.count, temperature: 0, repetitionPenalty: Float(penalty)))
        #expect(result.tokens == expected)
    }
}
