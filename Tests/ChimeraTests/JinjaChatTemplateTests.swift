import Chimera
import ChimeraComponents
import ChimeraJinja
import ChimeraTokenizers
import Foundation
import Testing

/// A checkpoint's own Jinja chat template: imported beside its manifests, named by the language
/// model (or the LLaVA assembly), and rendered and tokenized as transformers' apply_chat_template
/// (Scripts/make_chat_template_fixtures.py).
@Suite struct JinjaChatTemplateTests {
    struct Fixture: Decodable {
        struct Case: Decodable { let template: String; let conversation: String; let text: String?; let ids: [Int]?; let error: String? }
        let checkpoint: String
        let templates: [String: String]
        let conversations: [String: [ChatTurn]]
        let cases: [Case]
        static func load() throws -> Fixture {
            try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: packageRoot.appendingPathComponent("Tests/ChimeraTests/Fixtures/templates/checkpoint_chat.json")))
        }
    }

    /// The fixture checkpoint with `template` in its tokenizer_config.json, imported into a new folder.
    static func importWithTemplate(_ template: String, checkpoint: String, name: String) throws -> (result: ImportResult, folder: URL) {
        let copy = temporaryDirectory().appendingPathComponent(checkpoint)
        try FileManager.default.copyItem(at: packageRoot.appendingPathComponent("Tests/ChimeraTests/Fixtures/\(checkpoint)"), to: copy)
        let configURL = copy.appendingPathComponent("tokenizer_config.json")
        var config = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: configURL)) as? [String: Any])
        config["chat_template"] = template
        try JSONSerialization.data(withJSONObject: config).write(to: configURL)
        // A context that takes the longest conversation (this tiny tokenizer spells "<|im_start|>"
        // in a dozen tokens); the prompts are only tokenized.
        let modelConfigURL = copy.appendingPathComponent("config.json")
        var modelConfig = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: modelConfigURL)) as? [String: Any])
        modelConfig["max_position_embeddings"] = 512
        try JSONSerialization.data(withJSONObject: modelConfig).write(to: modelConfigURL)
        let out = temporaryDirectory()
        return (try CheckpointImporter(checkpoint: copy, outputDirectory: out, name: name).run(), out)
    }

    @Test func importedTemplateTokenizesAsTransformers() throws {
        let fixture = try Fixture.load()
        #expect(fixture.cases.count == 12 && fixture.cases.contains { $0.error != nil } && fixture.cases.contains { $0.conversation == "continued" })
        for (name, template) in fixture.templates {
            let (result, folder) = try Self.importWithTemplate(template, checkpoint: fixture.checkpoint, name: "lm-\(name)")
            let component = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: result.mainPath)) as? [String: Any])
            #expect(component["chat_template"] as? String == "lm-\(name)-chat")
            #expect(result.templatePath?.lastPathComponent == "lm-\(name)-chat.template.json")
            #expect(try String(contentsOf: folder.appendingPathComponent("lm-\(name).chat_template.jinja"), encoding: .utf8) == template)
            for c in fixture.cases where c.template == name {
                let conversation = temporaryDirectory().appendingPathComponent("conversation.json")
                try JSONEncoder().encode(fixture.conversations[c.conversation]).write(to: conversation)
                // --chat is implied by --conversation; the template is the language model's own.
                let run = try CLI.run(["generate", "--manifests", folder.path, "--llm", "lm-\(name)", "--conversation", conversation.path,
                                       "--show-tokens", "--json"])
                if let error = c.error {
                    #expect(run.status != 0 && run.stderr.contains("chat template 'lm-\(name)-chat' refuses the conversation: \(error)"), "\(name) \(c.conversation): \(run.all)")
                    continue
                }
                #expect(run.status == 0, "\(name) \(c.conversation): \(run.all)")
                let shown = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])
                #expect(shown["ids"] as? [Int] == c.ids, "\(name) \(c.conversation)")
            }
        }
    }

    /// The rendered text itself, through the library: the template sees the tokenizer's named
    /// special tokens (tokenizer_config.json), as transformers passes them.
    @Test func rendersTheTextTransformersRenders() throws {
        let fixture = try Fixture.load()
        let tokenizerFile = packageRoot.appendingPathComponent("Tests/ChimeraTests/Fixtures/\(fixture.checkpoint)/tokenizer.json")
        for c in fixture.cases {
            var template = ChatTemplate(id: c.template, jinjaFile: "\(c.template).jinja", template: try JinjaTemplate(fixture.templates[c.template]!),
                                            directory: temporaryDirectory())
            template.specialTokens = try Tokenizer.namedSpecialTokens(besides: tokenizerFile)
            #expect(!template.tokenizerAddsSpecialTokens)
            let turns = try #require(fixture.conversations[c.conversation])
            let continuing = turns.last?.role == "assistant"
            if let text = c.text { #expect(try template.render(turns, continuingAnswer: continuing) == text, "\(c.template) \(c.conversation)") } else {
                #expect(throws: ChatTemplateError.self) { _ = try template.render(turns) }
            }
        }
    }

    /// llava-hf's processor template reads turns as content parts: with content_parts it renders
    /// what transformers renders from typed parts (Scripts/make_llava_template_fixture.py).
    @Test func contentPartsRenderAsTheProcessorTemplate() throws {
        struct LLaVAFixture: Decodable { struct Case: Decodable { let conversation: String; let turns: [ChatTurn]; let expected: String }
            let chat_template: String; let cases: [Case] }
        let fixture = try JSONDecoder().decode(LLaVAFixture.self, from: Data(contentsOf: packageRoot.appendingPathComponent("Tests/ChimeraTests/Fixtures/templates/llava_hf.json")))
        var template = ChatTemplate(id: "llava-hf", jinjaFile: "llava.jinja", template: try JinjaTemplate(fixture.chat_template), directory: temporaryDirectory())
        #expect(try template.render(fixture.cases[0].turns) != fixture.cases[0].expected)  // as text, its images and words are lost
        template.contentParts = ["<image>": "image"]
        for c in fixture.cases { #expect(try template.render(c.turns) == c.expected, "\(c.conversation)") }
    }

    @Test func templateFileGivenToGenerate() throws {
        let fixture = try Fixture.load()
        let (_, folder) = try Self.importWithTemplate(fixture.templates["zephyr"]!, checkpoint: fixture.checkpoint, name: "lm-z")
        let file = temporaryDirectory().appendingPathComponent("turns.jinja")
        try fixture.templates["turns"]!.write(to: file, atomically: true, encoding: .utf8)
        let expected = try #require(fixture.cases.first { $0.template == "turns" && $0.conversation == "one_turn" }?.ids)
        let prompt = fixture.conversations["one_turn"]![0].content
        let run = try CLI.run(["generate", "--manifests", folder.path, "--llm", "lm-z", "--template", file.path, "--prompt", prompt, "--show-tokens", "--json"])
        #expect(run.status == 0, "\(run.all)")
        let shown = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])
        #expect(shown["ids"] as? [Int] == expected)
        // --show-prompt: the rendered text, as transformers renders it.
        let text = try #require(fixture.cases.first { $0.template == "turns" && $0.conversation == "one_turn" }?.text)
        let rendered = try CLI.run(["generate", "--manifests", folder.path, "--llm", "lm-z", "--template", file.path, "--prompt", prompt, "--show-prompt", "--json"])
        let shownPrompt = try #require(try JSONSerialization.jsonObject(with: Data(rendered.stdout.utf8)) as? [String: Any], "\(rendered.all)")
        #expect(shownPrompt["prompt"] as? String == text && shownPrompt["tokenizer_adds_special_tokens"] as? Bool == false)
        let missing = try CLI.run(["generate", "--manifests", folder.path, "--llm", "lm-z", "--template", "/nonexistent/t.jinja", "--prompt", "hi", "--show-tokens"])
        #expect(missing.status != 0 && missing.stderr.contains("/nonexistent/t.jinja: cannot read the chat template: no such file"), "\(missing.all)")
        try "{% if %}".write(to: file, atomically: true, encoding: .utf8)
        let broken = try CLI.run(["generate", "--manifests", folder.path, "--llm", "lm-z", "--template", file.path, "--prompt", "hi", "--show-tokens"])
        #expect(broken.status != 0 && broken.stderr.contains("\(file.path): cannot read the chat template: line 1: expected an expression"), "\(broken.all)")
    }

    /// Quantizing an assembly whose chat template is an import's own Jinja one writes the template
    /// into the output folder (renamed as the components are), which then stands on its own.
    @Test func quantizedCopyTakesTheTemplateAlong() throws {
        let copy = temporaryDirectory().appendingPathComponent("llava-a")
        try FileManager.default.copyItem(at: packageRoot.appendingPathComponent("Tests/ChimeraTests/Fixtures/llava-a"), to: copy)
        let jinja = "{% for m in messages %}{{ m.role }}:{% for p in m.content %}{{ '<image>' if p.type == 'image' else p.text }}{% endfor %}\n{% endfor %}"
        try jinja.write(to: copy.appendingPathComponent("chat_template.jinja"), atomically: true, encoding: .utf8)
        let imported = temporaryDirectory()
        let result = try CheckpointImporter(checkpoint: copy, outputDirectory: imported).run()
        var catalog = Catalog()
        try catalog.load(directory: imported)
        let out = temporaryDirectory()
        _ = try Quantizer(catalog: catalog, families: BuiltinFamilies.registry()).quantize(try #require(result.assembly), to: .q8_0, output: out)
        var quantized = Catalog()
        try quantized.load(directory: out)
        let assembly = try quantized.assembly("llava-a-q8_0")
        #expect(assembly.chatTemplate == "llava-a-chat-q8_0")
        let template = try quantized.template("llava-a-chat-q8_0")
        #expect(template.contentParts == ["<image>": "image"] && template.jinja?.source == jinja)
        // (trim_blocks takes the line break after the inner endfor.)
        #expect(try template.render([ChatTurn(role: "user", content: "<image> What?")]) == "user:<image>What?")
    }

    /// A language model that names no chat template chats with the one beside its tokenizer, as
    /// transformers' tokenizer carries it (a catalogue model's downloaded folder).
    @Test func templateBesideTheTokenizerIsTheFallback() throws {
        let fixture = try Fixture.load()
        let copy = temporaryDirectory().appendingPathComponent(fixture.checkpoint)
        try FileManager.default.copyItem(at: packageRoot.appendingPathComponent("Tests/ChimeraTests/Fixtures/\(fixture.checkpoint)"), to: copy)
        let out = temporaryDirectory()
        let result = try CheckpointImporter(checkpoint: copy, outputDirectory: out, name: "plain").run()
        #expect(result.templatePath == nil)
        let before = try CLI.run(["generate", "--manifests", out.path, "--llm", "plain", "--chat", "--prompt", "hi", "--show-prompt"])
        #expect(before.status != 0 && before.stderr.contains("its tokenizer's folder holds none"), "\(before.all)")
        // The downloaded folder gains its template (chat_template.jinja, as transformers 5 saves it).
        try fixture.templates["turns"]!.write(to: copy.appendingPathComponent("chat_template.jinja"), atomically: true, encoding: .utf8)
        let text = try #require(fixture.cases.first { $0.template == "turns" && $0.conversation == "one_turn" }?.text)
        let after = try CLI.run(["generate", "--manifests", out.path, "--llm", "plain", "--chat", "--prompt", fixture.conversations["one_turn"]![0].content,
                                 "--show-prompt", "--json"])
        let shown = try #require(try JSONSerialization.jsonObject(with: Data(after.stdout.utf8)) as? [String: Any], "\(after.all)")
        #expect(shown["prompt"] as? String == text && shown["tokenizer_adds_special_tokens"] as? Bool == false)
        // A multimodal checkpoint's folder holds a processor's template (content parts): not a fallback.
        try "{}".write(to: copy.appendingPathComponent("preprocessor_config.json"), atomically: true, encoding: .utf8)
        let multimodal = try CLI.run(["generate", "--manifests", out.path, "--llm", "plain", "--chat", "--prompt", "hi", "--show-prompt"])
        #expect(multimodal.status != 0 && multimodal.stderr.contains("its tokenizer's folder holds none"), "\(multimodal.all)")
    }

    /// --interactive with a Jinja template: each answer is the one a --conversation file of the same
    /// turns gets, and the KV cache keeps what the previous turns left (the rendered prefix is stable).
    @Test func interactiveChatWithAJinjaTemplate() throws {
        let folder = try CLI.temporaryFolder()
        let file = folder.appendingPathComponent("chat.jinja")
        try "{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content | trim }}</{{ m.role }}>\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
            .write(to: file, atomically: true, encoding: .utf8)
        let sample = CLI.packageRoot.appendingPathComponent("manifests/default/checkpoint/sample.png").path
        let chat = try CLI.run(["generate", "--template", file.path, "--image", sample, "--interactive", "--json", "--max-tokens", "3"],
                               standardInput: "What is here?\nAnd now?\n")
        #expect(chat.status == 0, "\(chat.all)")
        let answers = try chat.stdout.split(separator: "\n").map { try #require(try CLI.json(String($0)) as? [String: Any]) }
        try #require(answers.count == 2, "\(chat.all)")
        var turns: [[String: String]] = []
        for (answer, question) in zip(answers, ["What is here?", "And now?"]) {
            turns.append(["role": "user", "content": question])
            let conversation = folder.appendingPathComponent("turns\(turns.count).json")
            try JSONSerialization.data(withJSONObject: turns).write(to: conversation)
            let single = try CLI.run(["generate", "--template", file.path, "--image", sample, "--conversation", conversation.path, "--json", "--max-tokens", "3"])
            let expected = try #require(try CLI.json(single.stdout) as? [String: Any], "\(single.all)")
            #expect(answer["tokens"] as? [Int] == expected["tokens"] as? [Int] && answer["prompt_tokens"] as? Int == expected["prompt_tokens"] as? Int)
            turns.append(["role": "assistant", "content": try #require(answer["text"] as? String)])
        }
        let cached = answers.compactMap { $0["cached_prompt_tokens"] as? Int }, prompts = answers.compactMap { $0["prompt_tokens"] as? Int }
        #expect(cached.count == 2 && cached[1] > prompts[0] / 2, "\(cached) of \(prompts)")
    }

    @Test func badTemplateManifestsAreRefused() throws {
        let folder = temporaryDirectory()
        try "{{ messages[0].content[0].text }}".write(to: folder.appendingPathComponent("t.jinja"), atomically: true, encoding: .utf8)
        func load(_ json: String) throws -> AnyManifest {
            let url = folder.appendingPathComponent("x.template.json")
            try json.write(to: url, atomically: true, encoding: .utf8)
            return try AnyManifest.load(contentsOf: url)
        }
        let good = try load(#"{"schema": "chimera.template/v1", "id": "t", "jinja_file": "t.jinja", "content_parts": {"<image>": "image"}}"#)
        guard case .template(let template) = good else { Issue.record("not a template"); return }
        #expect(try template.render([ChatTurn(role: "user", content: "hi")]) == "hi")
        #expect(throws: ManifestError.self) { _ = try load(#"{"schema": "chimera.template/v1", "id": "t", "jinja_file": "t.jinja", "user": "{{content}}"}"#) }
        #expect(throws: ManifestError.self) {
            _ = try load(#"{"schema": "chimera.template/v1", "id": "t", "user": "{{content}}", "assistant": "{{content}}", "generation_prompt": "", "content_parts": {"<image>": "image"}}"#)
        }
        do { _ = try load(#"{"schema": "chimera.template/v1", "id": "t", "jinja_file": "missing.jinja"}"#); Issue.record("a missing jinja_file was read") } catch {
            #expect("\(error.localizedDescription)".contains("jinja_file: \(folder.appendingPathComponent("missing.jinja").path): no such file"), "\(error.localizedDescription)")
        }
        try "line one\n{{ x | nosuchfilter }}".write(to: folder.appendingPathComponent("bad.jinja"), atomically: true, encoding: .utf8)
        do { _ = try load(#"{"schema": "chimera.template/v1", "id": "t", "jinja_file": "bad.jinja"}"#); Issue.record("an unknown filter was read") } catch {
            #expect("\(error.localizedDescription)".contains("bad.jinja: line 2: no filter named 'nosuchfilter'"), "\(error.localizedDescription)")
        }
    }
}
