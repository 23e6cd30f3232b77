import ChimeraComponents
import ChimeraIO
import Foundation
import Testing
@testable import Chimera

/// The built-in catalogue (manifests/: default, components, catalog, templates).
enum BuiltinCatalog {
    static func load() throws -> Catalog {
        var catalog = Catalog()
        try catalog.load(directory: ManifestFixtures.builtin)
        return catalog
    }

    /// One case of Tests/ChimeraTests/Fixtures/templates/golden.json (Scripts/make_template_fixtures.py).
    struct GoldenCase: Decodable, CustomTestStringConvertible {
        let template: String
        let conversation: String
        let turns: [ChatTurn]
        let expected: String
        let tinyllava: String?
        var testDescription: String { "\(template)/\(conversation)" }
    }

    static let golden: [GoldenCase] = {
        let url = ManifestFixtures.root.appendingPathComponent("Tests/ChimeraTests/Fixtures/templates/golden.json")
        guard let data = FileManager.default.contents(atPath: url.path),
              let cases = try? JSONDecoder().decode([GoldenCase].self, from: data) else { return [] }
        return cases
    }()
}

@Suite struct TemplateTests {
    /// The oldest exchange goes (a user turn and what follows it up to the next user turn); system
    /// turns stay; the last user turn is never dropped.
    @Test func droppingTheOldestExchange() {
        func turns(_ roles: String) -> [ChatTurn] { roles.map { ChatTurn(role: ["s": "system", "u": "user", "a": "assistant"][$0]!, content: "\($0)") } }
        func roles(_ t: [ChatTurn]) -> String { String(t.map { $0.role.first! == "s" ? "s" : $0.role.first! }) }
        #expect(ChatTurn.droppingOldestExchange(turns("suauau")).map { (roles($0.turns), $0.dropped) } ?? ("", 0) == ("suau", 2))
        #expect(ChatTurn.droppingOldestExchange(turns("uaau")).map { (roles($0.turns), $0.dropped) } ?? ("", 0) == ("u", 3))
        #expect(ChatTurn.droppingOldestExchange(turns("su")) == nil)
        #expect(ChatTurn.droppingOldestExchange(turns("sua")) == nil)
    }

    /// An answer joins the conversation without the placeholders it spells; other text stays.
    @Test func answersLoseThePlaceholdersTheySpell() {
        let spelled = ChatTurn.answer("a <image> b <audio><image>", placeholders: ["<image>", "<audio>"])
        #expect(spelled.turn == ChatTurn(role: "assistant", content: "a  b ") && spelled.removedPlaceholders)
        let plain = ChatTurn.answer("a <imag> b", placeholders: ["<image>"])
        #expect(plain.turn == ChatTurn(role: "assistant", content: "a <imag> b") && !plain.removedPlaceholders)
    }

    /// The built-in "llava" renders what llava-hf's LLaVA-1.5 Jinja template does through
    /// transformers' apply_chat_template (Scripts/make_llava_template_fixture.py), system turn included.
    @Test func llavaRendersAsTheLLaVAHFTemplate() throws {
        struct Fixture: Decodable { struct Case: Decodable { let conversation: String; let turns: [ChatTurn]; let expected: String }; let cases: [Case] }
        let url = ManifestFixtures.root.appendingPathComponent("Tests/ChimeraTests/Fixtures/templates/llava_hf.json")
        let fixture = try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: url))
        #expect(fixture.cases.count == 4)
        let llava = try BuiltinCatalog.load().template("llava")
        for c in fixture.cases { #expect(try llava.render(c.turns) == c.expected, "\(c.conversation)") }
    }

    @Test func goldenFileCoversEveryTinyLLaVATemplate() {
        let names = Set(BuiltinCatalog.golden.map(\.template))
        #expect(names == ["llama", "phi", "gemma", "qwen2_base", "qwen2_instruct", "pretrain"])
        #expect(Set(BuiltinCatalog.golden.map(\.conversation)).isSuperset(of: ["one_turn", "two_turns"]))
    }

    /// Each template renders what TinyLLaVA's Template._prompt produces.
    @Test(arguments: BuiltinCatalog.golden) func rendersAsTinyLLaVA(_ golden: BuiltinCatalog.GoldenCase) throws {
        let template = try BuiltinCatalog.load().template(golden.template)
        #expect(try template.render(golden.turns) == golden.expected)
    }

    /// The one documented difference: TinyLLaVA opens a pretrain answer with the literal "{{content}}\n:".
    @Test func pretrainOpensTheAnswerWithNothing() throws {
        let open = try #require(BuiltinCatalog.golden.first { $0.template == "pretrain" && $0.conversation == "one_turn" })
        #expect(open.tinyllava == "<image>{{content}}\n:")
        #expect(open.expected == "<image>")
    }

    @Test func phiOneTurnSpelledOut() throws {
        // tinyllava/data/template/phi_template.py with eval_model's "<image>\n" + query and no answer.
        let phi = try BuiltinCatalog.load().template("phi")
        #expect(try phi.render(prompt: "What is this?") == "A chat between a curious user and an artificial intelligence assistant. "
            + "The assistant gives helpful, detailed, and polite answers to the user's questions. USER: What is this? ASSISTANT:")
        #expect(phi.stop == ["<|endoftext|>"])
    }

    /// A conversation ending on an answer to continue: the prompt stops right after its text, no
    /// end of turn (transformers' continue_final_message); only an assistant turn can be continued.
    @Test func slotTemplateContinuesTheFinalAnswer() throws {
        let phi = try BuiltinCatalog.load().template("phi")
        let turns = [ChatTurn(role: "user", content: "What is this?"), ChatTurn(role: "assistant", content: "It is a")]
        #expect(try phi.render(turns, continuingAnswer: true).hasSuffix("USER: What is this? ASSISTANT: It is a"))
        #expect(try phi.render(turns).hasSuffix("ASSISTANT: It is a<|endoftext|>"))
        #expect(throws: ChatTemplateError.self) { _ = try phi.render([ChatTurn(role: "user", content: "Hi")], continuingAnswer: true) }
    }

    @Test func llavaKeepsItsFormat() throws {
        // llava-hf/llava-1.5-7b-hf's chat template: "USER: <image>\n{text} ASSISTANT:"; an answer is
        // followed by a space, no system prompt, placeholders stay where the user put them.
        let llava = try BuiltinCatalog.load().template("llava")
        #expect(try llava.render(prompt: "<image>\nWhat is this?") == "USER: <image>\nWhat is this? ASSISTANT:")
        let turns = [ChatTurn(role: "user", content: "Hi <image>"), ChatTurn(role: "assistant", content: "A dog."),
                     ChatTurn(role: "user", content: "Sure?")]
        #expect(try llava.render(turns) == "USER: Hi <image> ASSISTANT: A dog. USER: Sure? ASSISTANT:")
    }

    @Test func systemTurnReplacesTheSystemPrompt() throws {
        let llama = try BuiltinCatalog.load().template("llama")
        let turns = [ChatTurn(role: "system", content: "Be brief."), ChatTurn(role: "user", content: "<image>\nWhat?")]
        #expect(try llama.render(turns) == "Be brief. USER: <image>\nWhat? ASSISTANT:")
    }

    @Test func badConversationsAreRefused() throws {
        let llama = try BuiltinCatalog.load().template("llama")
        #expect(throws: ChatTemplateError.badConversation(#"turn 0 has role "assistant", expected "user" (a leading "system" turn, then "user" and "assistant" alternating)"#)) {
            try llama.render([ChatTurn(role: "assistant", content: "x")])
        }
        #expect(throws: ChatTemplateError.badConversation(#"turn 2 has role "user", expected "assistant" (a leading "system" turn, then "user" and "assistant" alternating)"#)) {
            try llama.render([ChatTurn(role: "system", content: "s"), ChatTurn(role: "user", content: "a"), ChatTurn(role: "user", content: "b")])
        }
        #expect(throws: ChatTemplateError.badConversation("holds no user turn")) { try llama.render([]) }
    }

    @Test func templateManifestErrorsNameTheFileAndField() throws {
        let folder = try ManifestFixtures.temporaryFolder()
        let base: [String: Any] = ["schema": "chimera.template/v1", "id": "t", "user": "U: {{content}} ",
                                   "assistant": "A: {{content}}", "generation_prompt": "A:"]
        let url = try ManifestFixtures.write(base.merging(["stopp": ["x"]]) { $1 }, to: folder, name: "t.json")
        let unknown = ManifestFixtures.loadError(url)
        #expect(unknown.hasPrefix(url.path + ": ") && unknown.contains("stopp: unknown field 'stopp'"), "\(unknown)")
        let noSlot = ManifestFixtures.loadError(try ManifestFixtures.write(base.merging(["assistant": "A:"]) { $1 }, to: folder, name: "t.json"))
        #expect(noSlot.contains("assistant: must hold {{content}}"), "\(noSlot)")
        let emptyStop = ManifestFixtures.loadError(try ManifestFixtures.write(base.merging(["stop": [""]]) { $1 }, to: folder, name: "t.json"))
        #expect(emptyStop.contains("stop: an empty stop string"), "\(emptyStop)")
        // The one slot is {{content}}, filled once: another spelling or a second one would stay as text.
        for (key, value, expected) in [("user", "U: {{ content }} ", "user: holds \"{{\" other than one {{content}}"),
                                       ("system_format", "{{content}} {{content}}", "system_format: holds \"{{\" other than one {{content}}"),
                                       ("generation_prompt", "A: {{content}}", "generation_prompt: holds \"{{\": nothing is filled in here")] {
            let message = ManifestFixtures.loadError(try ManifestFixtures.write(base.merging([key: value]) { $1 }, to: folder, name: "t.json"))
            #expect(message.contains(expected), "\(message)")
        }
        // A user slot without {{content}} drops the text (TinyLLaVA's pretrain template does, on
        // purpose) — and with it a placeholder, which is refused rather than its input left unused.
        guard case let .template(dropping) = try AnyManifest.load(contentsOf: try ManifestFixtures.write(base.merging(["user": "U: "]) { $1 }, to: folder, name: "t.json")) else {
            Issue.record("not read as a template"); return
        }
        #expect(try dropping.render([ChatTurn(role: "user", content: "q")], keeping: ["<image>"]) == "U: A:")
        #expect(throws: ChatTemplateError.dropsPlaceholder(template: "t", placeholder: "<image>", given: 1, kept: 0)) {
            try dropping.render([ChatTurn(role: "user", content: "<image> q")], keeping: ["<image>"])
        }
        let pretrain = try BuiltinCatalog.load().template("pretrain")
        #expect(try pretrain.render([ChatTurn(role: "user", content: "<image>\nWhat is it?")], keeping: ["<image>"]) == "<image>")
        guard case let .template(t) = try AnyManifest.load(contentsOf: try ManifestFixtures.write(base, to: folder, name: "t.json")) else {
            Issue.record("not read as a template"); return
        }
        #expect(try t.render(prompt: "q") == "U: q A:")
    }

    @Test func unknownTemplateListsTheKnownOnes() throws {
        let catalog = try BuiltinCatalog.load()
        #expect(throws: ManifestError.self) { try catalog.template("vicuna") }
        do { _ = try catalog.template("vicuna") } catch {
            #expect(ManifestFixtures.message(error).contains("unknown chat template id 'vicuna' (known: gemma, llama, llava, phi, pretrain"))
        }
    }

    @Test func conversationFileErrorsNameTheFile() throws {
        let folder = try ManifestFixtures.temporaryFolder()
        let url = try ManifestFixtures.write(text: #"[{"role": "user", "text": "hi"}]"#, to: folder, name: "c.json")
        do { _ = try ChatTurn.conversation(contentsOf: url); Issue.record("accepted") } catch {
            let message = ManifestFixtures.message(error)
            #expect(message.hasPrefix(url.path + ": ") && message.contains("text"), "\(message)")
        }
    }

    @Test func everyCatalogAssemblyNamesAKnownTemplate() throws {
        let catalog = try BuiltinCatalog.load()
        for assembly in catalog.assemblies.values {
            if let name = assembly.chatTemplate { #expect(catalog.templates[name] != nil, "\(assembly.id): \(name)") }
        }
    }
}

@Suite struct StopStringTests {
    /// A stop string that is not one token stops generation once the text holds it, and is cut off.
    @Test func textStopEndsAndCutsTheAnswer() throws {
        let catalog = try BuiltinCatalog.load()
        let model = try Assembler(catalog: catalog, families: BuiltinFamilies.registry()).build(try catalog.assembly(ManifestFixtures.assemblyID))
        let prompt = "USER: Hello there ASSISTANT:"
        let free = try model.generate(prompt: prompt, options: GenerationOptions(maxTokens: 8))
        #expect(free.tokens.count == 8)
        let third = try model.tokenizer.decode(Array(free.tokens.prefix(3)), skipSpecialTokens: true)
        let before = try model.tokenizer.decode(Array(free.tokens.prefix(2)), skipSpecialTokens: true)
        let stop = String(third.dropFirst(before.count))
        try #require(!stop.isEmpty && !before.contains(stop))
        var streamed = ""
        let stopped = try model.generate(prompt: prompt, options: GenerationOptions(maxTokens: 8, stop: [stop])) { streamed += $0 }
        #expect(stopped.stopReason == "stop")
        #expect(stopped.tokens == Array(free.tokens.prefix(3)))
        #expect(stopped.text == before)
        #expect(streamed == before, "no part of the stop string is streamed")
    }

    @Test func filterHoldsBackWhatMayBecomeAStopString() {
        var filter = StopStringFilter(stops: ["END", "\n"])
        #expect(filter.append("abcE") == "abc")
        #expect(filter.append("N") == "")
        #expect(filter.append("X y") == "ENX y")
        #expect(!filter.stopped)
        #expect(filter.append(" EN") == " ")
        #expect(filter.append("D and more") == "")
        #expect(filter.stopped && filter.finish() == "")
        var open = StopStringFilter(stops: ["END"])
        #expect(open.append("the EN") == "the ")
        #expect(open.finish() == "EN")
        var newline = StopStringFilter(stops: ["\n"])
        #expect(newline.append("a caption.\nmore") == "a caption.")
        #expect(StopStringFilter.cut("x END y END", at: ["END"]) == "x ")
        // A match that fails part-way falls back to the longest start it still holds (aaab: "aab").
        var overlapping = StopStringFilter(stops: ["aab"])
        #expect(overlapping.append("xaa") == "x" && overlapping.append("ab!") == "a" && overlapping.stopped)
    }

    /// Streamed pieces add up to the text, also when a token only adds a combining mark or a
    /// variation selector to the last character (its character count unchanged: it was dropped).
    @Test func filterStreamsMarksThatExtendTheLastCharacter() {
        var filter = StopStringFilter(stops: ["END"])
        var streamed = ""
        for piece in ["🚗", "\u{FE0F}", "e", "\u{301}", " ok", "\u{200D}"] { streamed += filter.append(piece) }
        streamed += filter.finish()
        #expect(Array(streamed.unicodeScalars) == Array("🚗\u{FE0F}e\u{301} ok\u{200D}".unicodeScalars))
        // A long stop string costs a few steps a byte: matched after 100,000 bytes of near misses.
        let long = String(repeating: "x", count: 100_000) + "!"
        var patient = StopStringFilter(stops: [long])
        for _ in 0..<100 { _ = patient.append(String(repeating: "x", count: 1_000)) }
        #expect(!patient.stopped && patient.append("!") == "" && patient.stopped)
    }
}

@Suite struct CatalogueTests {
    static let baseIDs = ["clip-vit-large-patch14-336", "siglip-so400m-patch14-384", "tinyllama-1.1b-chat", "phi-2",
                          "stablelm-2-1_6b", "qwen2-0.5b", "qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-3b", "gemma-2b"]
    static let tinyllava = ["tinyllava-phi-2-siglip-3.1b", "tinyllava-gemma-siglip-2.4b", "tinyllava-qwen2-0.5b-siglip",
                            "tinyllava-qwen2.5-3b-siglip", "tinyllava-tinyllama-siglip-1.5b", "tinyllava-stablelm-2-siglip-2.0b"]

    @Test func catalogueLoadsWithFamiliesNotYetRegistered() throws {
        let catalog = try BuiltinCatalog.load()
        for id in Self.baseIDs { #expect(catalog.components[id] != nil, "\(id)") }
        for id in Self.tinyllava {
            let assembly = try catalog.assembly(id)
            #expect(catalog.components[assembly.languageModel] != nil)
            #expect(assembly.inputs.count == 1 && assembly.inputs[0].select == .patch && assembly.inputs[0].featureLayer == -2)
        }
    }

    /// The built-in families accept their catalogue configs; the others are reported, not fatal.
    @Test func configsOfRegisteredFamiliesValidate() throws {
        let catalog = try BuiltinCatalog.load()
        let checker = CompatibilityChecker(catalog: catalog, families: BuiltinFamilies.registry())
        for manifest in catalog.components.values where manifest.origin.contains("/catalog/") {
            let problems = checker.problems(of: manifest).filter { if case .tokenizerMissing = $0 { return false }; return true }
            if BuiltinFamilies.registry().families[manifest.family] != nil {
                #expect(problems.isEmpty, "\(manifest.id): \(problems)")
            } else {
                #expect(problems == [.unknownFamily(id: manifest.id, family: manifest.family)])
            }
        }
    }

    @Test func publishedConnectorsHaveRealWidths() throws {
        let catalog = try BuiltinCatalog.load()
        let widths = ["tinyllava-phi-2-siglip-3.1b": 2560, "tinyllava-gemma-siglip-2.4b": 2048, "tinyllava-qwen2-0.5b-siglip": 896,
                      "tinyllava-qwen2.5-3b-siglip": 2048, "tinyllava-tinyllama-siglip-1.5b": 2048,
                      "tinyllava-stablelm-2-siglip-2.0b": 2048]
        let checker = CompatibilityChecker(catalog: catalog, families: BuiltinFamilies.registry())
        for (id, width) in widths {
            let connector = try catalog.component("\(id)-connector", kind: .connector)
            #expect(connector.inputWidth == .fixed(1152) && connector.outputWidth == .fixed(width), "\(id)")
            // Everything fits; what remains is the user's download (tokenizer file).
            let problems = checker.problems(assembly: try catalog.assembly(id))
            #expect(problems.allSatisfy { $0.contains("tokenizer file") }, "\(id): \(problems)")
        }
    }

    @Test func tildeResolvesUnderHome() throws {
        let m = try BuiltinCatalog.load().component("tinyllama-1.1b-chat")
        let home = ProcessInfo.processInfo.environment["HOME"] ?? NSHomeDirectory()
        #expect(m.resolve("~/.chimera/weights/x/").path == URL(fileURLWithPath: home).appendingPathComponent(".chimera/weights/x").path)
        #expect(m.resolve("/abs/file").path == "/abs/file")
        #expect(m.resolve("rel.json").path == m.directory.appendingPathComponent("rel.json").path)
    }

    /// A weights entry ending in "/" is a checkpoint folder: its index when present, else its shards.
    @Test func weightsFolderResolvesToItsFiles() throws {
        let folder = try ManifestFixtures.temporaryFolder()
        var m = ComponentManifest(id: "x", kind: .languageModel, family: "llama", config: .object([:]))
        m.directory = folder
        m.weights = WeightsReference(files: ["w/"])
        m.tokenizer = TokenizerReference(file: "w/tokenizer.json", eosTokenIDs: [2])
        #expect(m.missingFiles == [folder.appendingPathComponent("w").path + "/", folder.appendingPathComponent("w/tokenizer.json").path])
        do { _ = try m.weightFiles(); Issue.record("an absent folder was accepted") } catch {
            #expect(ManifestFixtures.message(error).contains("holds no *.safetensors"))
        }
        let w = folder.appendingPathComponent("w")
        try FileManager.default.createDirectory(at: w, withIntermediateDirectories: true)
        for name in ["model-00002-of-00002.safetensors", "model-00001-of-00002.safetensors", "tokenizer.json"] {
            try #require(FileManager.default.createFile(atPath: w.appendingPathComponent(name).path, contents: Data()))
        }
        #expect(try m.weightFiles().map(\.lastPathComponent) == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"])
        #expect(m.missingFiles.isEmpty)
        try #require(FileManager.default.createFile(atPath: w.appendingPathComponent("model.safetensors.index.json").path, contents: Data()))
        #expect(try m.weightFiles().map(\.lastPathComponent) == ["model.safetensors.index.json"])
    }
}

@Suite struct PlannerTests {
    static func planner() throws -> Planner {
        Planner(catalog: try BuiltinCatalog.load(), families: BuiltinFamilies.registry(),
                devices: [MemoryDevice(name: "8 GiB", memoryBytes: 8 << 30), MemoryDevice(name: "2 GiB", memoryBytes: 2 << 30)])
    }

    @Test func tinyLlamaParametersMatchTheRealModel() throws {
        let plan = try Self.planner().plan("tinyllama-1.1b-chat")
        #expect(plan.totalParameters == 1_100_048_384)  // TinyLlama-1.1B-Chat-v1.0, transformers' num_parameters()
        #expect(plan.weightBytes["f32"] == 4 * 1_100_048_384 && plan.weightBytes["f16"] == 2 * 1_100_048_384)
        // 22 layers × (keys + values) × 4 kv heads × 64 dims × 1,024 tokens, in f32 whatever the
        // weights (as generate and bench keep the cache unless told otherwise), or in f16 when asked.
        #expect(plan.kvCache == .f32 && plan.kvCacheBytesPer1kTokens.values.allSatisfy { $0 == 22 * 2 * 4 * 64 * 1024 * 4 })
        let halfCache = try Self.planner().plan("tinyllama-1.1b-chat", kvCache: .f16)
        #expect(halfCache.kvCache == .f16 && halfCache.kvCacheBytesPer1kTokens.values.allSatisfy { $0 == 22 * 2 * 4 * 64 * 1024 * 2 })
        #expect(halfCache.peakBytes["int4"]! == plan.peakBytes["int4"]! - 2 * 22 * 2 * 4 * 64 * 1024 * 2)
        #expect(plan.contextTokens == 2048)
        #expect(plan.peakBytes["f16"]! == plan.weightBytes["f16"]! + 2 * plan.kvCacheBytesPer1kTokens["f16"]! + plan.activationBytes)
        #expect(plan.fits.map { $0.fits["f32"] } == [true, false])
        #expect(plan.fits.map { $0.fits["int4"] } == [true, true])
    }

    @Test func clipVisionTowerParametersMatchTheRealModel() throws {
        let plan = try Self.planner().plan("clip-vit-large-patch14-336")
        // transformers' CLIPVisionModel has 303,507,456 (its post_layernorm, 2,048, is never used here).
        #expect(abs(Double(plan.totalParameters) - 303_507_456) / 303_507_456 < 0.01)
        #expect(plan.totalParameters == 303_507_456 - 2_048)
        #expect(plan.kvCacheBytesPer1kTokens["f32"] == 0 && plan.contextTokens == 0)
    }

    /// Exact counts of the real checkpoints (transformers' num_parameters; SigLIP without its
    /// unused attention-pooling head and post-layernorm-free CLIP as Chimera builds them).
    @Test(arguments: [
        ("phi-2", 2_779_683_840), ("qwen2-0.5b", 494_032_768), ("qwen2.5-0.5b", 494_032_768),
        ("qwen2.5-1.5b", 1_543_714_304), ("qwen2.5-3b", 3_085_938_688), ("gemma-2b", 2_506_172_416),
        ("stablelm-2-1_6b", 1_644_515_328), ("siglip-so400m-patch14-384", 412_984_944),
    ])
    func catalogueParametersMatchTheRealModels(id: String, parameters: Int) throws {
        #expect(try Self.planner().plan(id).totalParameters == parameters)
    }

    @Test func tinyLLaVAPhi2SigLIPSumsItsParts() throws {
        let plan = try Self.planner().plan("tinyllava-phi-2-siglip-3.1b")
        // Phi-2 + SigLIP so400m vision + a 1152 → 2560 → 2560 MLP.
        #expect(plan.totalParameters == 2_779_683_840 + 412_984_944 + (1152 * 2560 + 2560 + 2560 * 2560 + 2560))
    }

    @Test func assemblyPlanSumsItsParts() throws {
        let plan = try Self.planner().plan(ManifestFixtures.assemblyID, context: 100)
        #expect(plan.parts.map(\.id) == [ManifestFixtures.llmID, ManifestFixtures.encoderID, ManifestFixtures.connectorID])
        #expect(plan.totalParameters == plan.parts.reduce(0) { $0 + $1.parameters })
        // The projector: 64 → 128 → 128 with biases.
        #expect(plan.parts[2].parameters == 64 * 128 + 128 + 128 * 128 + 128)
        #expect(plan.contextTokens == 100)
    }

    /// The weights an assembly keeps in memory, from its files' headers, are refused before loading
    /// when the machine has less available.
    @Test func memoryCheckRefusesWhatCannotFit() throws {
        let catalog = try BuiltinCatalog.load()
        let assembly = try catalog.assembly(ManifestFixtures.assemblyID)
        let plan = try Self.planner().plan(ManifestFixtures.assemblyID)
        // The tiny default's one file holds its three parts in float16 (and CLIP's unused post-layernorm,
        // which a file-based count includes): every tensor of it as stored, twice that widened.
        let file = try WeightStore(files: [packageRoot.appendingPathComponent("manifests/default/checkpoint/model.safetensors").path])
        let needed = try MemoryCheck.weightBytes(assembly, in: catalog, stored: .resident)
        #expect(needed == file.byteCount && needed >= plan.totalParameters * 2 && needed < plan.totalParameters * 2 + 1024)
        #expect(try MemoryCheck.weightBytes(assembly, in: catalog, stored: .widened) == 2 * needed)
        try MemoryCheck.require(assembly, in: catalog, stored: .resident, available: needed)
        try MemoryCheck.require(assembly, in: catalog, stored: .mapped, available: 1)  // the page cache's to evict
        #expect {
            try MemoryCheck.require(assembly, in: catalog, stored: .resident, available: needed - 1)
        } throws: { error in
            (error as? LocalizedError)?.errorDescription?.contains("more than this machine has available") == true
                && (error as? LocalizedError)?.errorDescription?.contains("--mapped-weights") == true
        }
        let meminfo = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:    2000 kB\nSwapTotal: 0 kB\nSwapFree:        48 kB\n"
        #expect(MemoryCheck.availableBytes(meminfo: meminfo) == 2048 * 1024)
        #expect(MemoryCheck.availableBytes(meminfo: "MemTotal: 5 kB\n") == nil)
        #expect(MemoryCheck.availableBytes(meminfo: nil) == nil)
        #expect((MemoryCheck.availableBytes() ?? 0) > 0)
    }

    @Test func freshConnectorNeedsAnAssembly() throws {
        do { _ = try Self.planner().plan("mlp2x-gelu-fresh"); Issue.record("planned an auto-width connector") } catch {
            #expect(ManifestFixtures.message(error).contains("width \"auto\": plan an assembly"))
        }
        #expect(throws: PlanError.self) { try Self.planner().plan("tinyllama-1.1b-chat", context: 0) }
    }

    @Test func quantizedSizesCountTheirScales() {
        #expect(Precision.int8.bytesPerParameter == 1.0625)
        #expect(Precision.int4.bytesPerParameter == 0.5625)
        #expect(MemoryDevice.gpus.count == 9 && MemoryDevice.gpus.first { $0.name == "RTX 2080 Ti" }?.memoryBytes == 11 << 30)
    }
}

@Suite struct MatrixTests {
    @Test func matrixCoversEveryChainWithReasons() throws {
        let catalog = try BuiltinCatalog.load()
        let cells = CompatibilityChecker(catalog: catalog, families: BuiltinFamilies.registry()).matrix()
        let e = catalog.list(kind: .encoder).count, c = catalog.list(kind: .connector).count, l = catalog.list(kind: .languageModel).count
        #expect(cells.count == e * c * l)
        #expect(cells.allSatisfy { $0.fits == $0.reasons.isEmpty })
        let cell = { (e: String, c: String, l: String) in cells.first { $0.encoder == e && $0.connector == c && $0.languageModel == l } }
        #expect(cell(ManifestFixtures.encoderID, ManifestFixtures.connectorID, ManifestFixtures.llmID)?.fits == true)
        #expect(cell("clip-vit-large-patch14-336", "mlp2x-gelu-fresh", "tinyllama-1.1b-chat")?.fits == true)
        let overContext = try #require(cell("clip-vit-large-patch14-336", "mlp2x-gelu-fresh", ManifestFixtures.llmID))
        #expect(overContext.reasons == ["token count 576 exceeds the context length 512 of '\(ManifestFixtures.llmID)'"])
        #expect(cell("siglip-so400m-patch14-384", "tinyllava-phi-2-siglip-3.1b-connector", "phi-2")?.fits == true)
        let narrow = try #require(cell("siglip-so400m-patch14-384", "tinyllava-phi-2-siglip-3.1b-connector", "qwen2-0.5b"))
        #expect(narrow.reasons.contains("width mismatch: 'tinyllava-phi-2-siglip-3.1b-connector' produces width 2560, 'qwen2-0.5b' expects 896"))
        let width = try #require(cell("clip-vit-large-patch14-336", "tinyllava-phi-2-siglip-3.1b-connector", "tinyllama-1.1b-chat"))
        #expect(width.reasons.contains("width mismatch: 'clip-vit-large-patch14-336' produces width 1024, 'tinyllava-phi-2-siglip-3.1b-connector' expects 1152"))
    }
}
