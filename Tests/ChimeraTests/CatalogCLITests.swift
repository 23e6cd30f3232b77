import Foundation
import Testing

/// `chimera plan`, `compat --matrix`, `list`'s weight marks and `generate --chat` from the command line.
@Suite struct CatalogCLITests {
    @Test func planJSON() throws {
        let r = try CLI.run(["plan", "tinyllama-1.1b-chat", "--json", "--context", "1024"])
        #expect(r.status == 0, "\(r.all)")
        let plan = try #require(try CLI.json(r.stdout) as? [String: Any])
        #expect(plan["total_parameters"] as? Int == 1_100_048_384)
        #expect(plan["context_tokens"] as? Int == 1024)
        let fits = try #require(plan["fits"] as? [[String: Any]])
        #expect(fits.count == 10, "nine GPUs and this machine")
        let names = fits.compactMap { ($0["device"] as? [String: Any])?["name"] as? String }
        #expect(names.contains("RTX 4090") && names.contains("Quadro RTX 8000") && names.contains("this machine (RAM)"))
        let weights = try #require(plan["weight_bytes"] as? [String: Int])
        #expect(Set(weights.keys) == ["f32", "f16", "int8", "int4"])
    }

    @Test func planText() throws {
        let r = try CLI.run(["plan", "chimera-tiny-default"])
        #expect(r.status == 0, "\(r.all)")
        for text in ["chimera-tiny-default-llm", "total", "KV cache (f32) per 1k", "peak at 512 tokens", "RTX 2080 Ti (11.00 GiB)"] {
            #expect(r.stdout.contains(text), "\(text)")
        }
        let half = try CLI.run(["plan", "chimera-tiny-default", "--kv-cache", "f16", "--json"])
        #expect(half.status == 0, "\(half.all)")
        let plan = try #require(try CLI.json(half.stdout) as? [String: Any])
        #expect(plan["kv_cache"] as? String == "f16")
    }

    /// A huge model's figures keep their columns apart ("262632.78 GiB131316.39 GiB" ran together).
    @Test func planColumnsFitTheirFigures() throws {
        let file = try CLI.temporaryFolder().appendingPathComponent("huge.component.json")
        try Data("""
            { "schema": "chimera.component/v1", "id": "huge-llm", "kind": "language_model", "family": "llama", "context_length": 1000000,
              "config": { "hidden_size": 65536, "intermediate_size": 262144, "layers": 1024, "heads": 512, "vocab_size": 1000000 },
              "tokenizer": { "file": "tokenizer.json" }, "weights": { "files": ["w.safetensors"] } }
            """.utf8).write(to: file)
        let r = try CLI.run(["plan", file.path])
        #expect(r.status == 0 && r.stdout.contains("262632.78 GiB 131316.39 GiB"), "\(r.all)")
        #expect(r.stdout.range(of: "B[0-9]", options: .regularExpression) == nil, "\(r.stdout)")
    }

    @Test func planOfAnAssemblyFile() throws {
        let file = CLI.packageRoot.appendingPathComponent("manifests/default/chimera-tiny-default.assembly.json").path
        let r = try CLI.run(["plan", file, "--json"])
        #expect(r.status == 0, "\(r.all)")
        let plan = try #require(try CLI.json(r.stdout) as? [String: Any])
        #expect(plan["subject"] as? String == "chimera-tiny-default")
        #expect((plan["parts"] as? [[String: Any]])?.count == 3)
        let bad = try CLI.run(["plan", "tinyllama-1.1b-chat", "--context", "0"])
        #expect(bad.status != 0 && bad.stderr.contains("--context must be positive"), "\(bad.all)")
    }

    @Test func planOfAPublishedTinyLLaVA() throws {
        let r = try CLI.run(["plan", "tinyllava-phi-2-siglip-3.1b", "--json"])
        #expect(r.status == 0, "\(r.all)")
        let plan = try #require(try CLI.json(r.stdout) as? [String: Any])
        #expect(plan["total_parameters"] as? Int == 3_202_176_624)
    }

    /// The catalogue ships manifests without weights (the tests' HOME is empty): its parts are
    /// judged and assembled before any download, and whatever would load them says what to fetch.
    @Test func catalogueAssembliesBeforeTheDownload() throws {
        let compat = try CLI.run(["compat", "tinyllava-qwen2-0.5b-siglip"])
        #expect(compat.status == 0 && compat.stdout.contains("tinyllava-qwen2-0.5b-siglip: all parts fit"), "\(compat.all)")
        #expect(compat.stdout.contains("weights not on disk yet for tinyllava-qwen2-0.5b-siglip-llm"), "\(compat.all)")
        let json = try #require(try CLI.json(try CLI.run(["compat", "tinyllava-qwen2-0.5b-siglip", "--json"]).stdout) as? [String: Any])
        #expect(json["fits"] as? Bool == true && (json["weights_missing"] as? [String])?.count == 3, "\(json)")
        // So are single parts: a missing tokenizer is a note, not a misfit.
        let part = try CLI.run(["compat", "tinyllama-1.1b-chat"])
        #expect(part.status == 0 && !part.stdout.contains("does not exist") && part.stdout.contains("✓ mlp2x-gelu-fresh (connector)")
                && part.stdout.contains("(tinyllama-1.1b-chat's files are not all on disk yet"), "\(part.all)")

        let file = try CLI.temporaryFolder().appendingPathComponent("mine.assembly.json")
        let assemble = try CLI.run(["assemble", "--encoder", "clip-vit-large-patch14-336", "--connector", "mlp2x-gelu-fresh",
                                    "--llm", "qwen2-0.5b", "-o", file.path])
        #expect(assemble.status == 0 && FileManager.default.fileExists(atPath: file.path), "\(assemble.all)")
        #expect(assemble.stderr.contains("weights not on disk yet for qwen2-0.5b, clip-vit-large-patch14-336"), "\(assemble.all)")

        let download = "huggingface-cli download Zhang199/TinyLLaVA-Qwen2-0.5B-SigLIP --local-dir "
        for command in [["generate", "--assembly", "tinyllava-qwen2-0.5b-siglip", "--prompt", "hi"],
                        ["bench", "--assembly", "tinyllava-qwen2-0.5b-siglip", "--no-encoder"],
                        ["quantize", "tinyllava-qwen2-0.5b-siglip", "--to", "q8_0", "-o", file.deletingLastPathComponent().appendingPathComponent("q").path]] {
            let r = try CLI.run(command)
            #expect(r.status != 0 && r.stderr.contains("assembly 'tinyllava-qwen2-0.5b-siglip' cannot run: files its parts need are not on disk"), "\(r.all)")
            #expect(r.stderr.contains("tinyllava-qwen2-0.5b-siglip-llm: ") && r.stderr.contains("/.chimera/weights/tinyllava-qwen2-0.5b-siglip/tokenizer.json"), "\(r.all)")
            #expect(r.stderr.components(separatedBy: download).count == 2, "one download for the three parts: \(r.all)")
        }
        let mine = try CLI.run(["generate", "--assembly", file.path, "--prompt", "hi"])
        #expect(mine.status != 0 && mine.stderr.contains("huggingface-cli download Qwen/Qwen2-0.5B --local-dir ")
                && mine.stderr.contains("huggingface-cli download openai/clip-vit-large-patch14-336 --local-dir "), "\(mine.all)")
    }

    @Test func matrixJSON() throws {
        let r = try CLI.run(["compat", "--matrix", "--json"])
        #expect(r.status == 0, "\(r.all)")
        let table = try #require(try CLI.json(r.stdout) as? [String: Any])
        let e = (table["encoders"] as? [String])?.count ?? 0, c = (table["connectors"] as? [String])?.count ?? 0
        let l = (table["language_models"] as? [String])?.count ?? 0
        let cells = try #require(table["cells"] as? [[String: Any]])
        #expect(e >= 3 && c >= 3 && l >= 10 && cells.count == e * c * l)
        let misfit = try #require(cells.first { $0["fits"] as? Bool == false })
        #expect(!((misfit["reasons"] as? [String]) ?? []).isEmpty)
    }

    @Test func matrixText() throws {
        let r = try CLI.run(["compat", "--matrix"])
        #expect(r.status == 0, "\(r.all)")
        #expect(r.stdout.contains("chimera-tiny-default-vision → chimera-tiny-default-projector"))
        #expect(r.stdout.contains("Reasons:") && r.stdout.contains("width mismatch"))
        let none = try CLI.run(["compat"])
        #expect(none.status != 0 && none.stderr.contains("--matrix"), "\(none.all)")
    }

    @Test func listMarksMissingWeightsAndSaysHowToProvideThem() throws {
        let r = try CLI.run(["list", "--kind", "language_model"])
        #expect(r.status == 0, "\(r.all)")
        let line = try #require(r.stdout.split(separator: "\n").first { $0.hasPrefix("tinyllama-1.1b-chat ") })
        #expect(line.contains("[weights missing]"))
        let defaultLine = try #require(r.stdout.split(separator: "\n").first { $0.hasPrefix("chimera-tiny-default-llm ") })
        #expect(!defaultLine.contains("[weights missing]"))
        // The help goes to stderr, so that stdout stays one table row per line.
        #expect(r.stderr.contains("huggingface-cli download") && r.stderr.contains("/.chimera/weights/tinyllama-1.1b-chat/"), "\(r.all)")
        let json = try CLI.run(["list", "--json", "--kind", "language_model"])
        let rows = try #require(try CLI.json(json.stdout) as? [[String: Any]])
        let row = try #require(rows.first { $0["id"] as? String == "tinyllama-1.1b-chat" })
        #expect((row["missing"] as? [String])?.count == 2, "weights folder and tokenizer")
    }

    @Test func chatTemplateRendersThePrompt() throws {
        let chat = try CLI.run(["generate", "--template", "llava", "--prompt", "<image>\nWhat is here?", "--json", "--max-tokens", "3"])
        let plain = try CLI.run(["generate", "--prompt", "USER: <image>\nWhat is here? ASSISTANT:", "--json", "--max-tokens", "3"])
        #expect(chat.status == 0 && plain.status == 0, "\(chat.all)\(plain.all)")
        let a = try #require(try CLI.json(chat.stdout) as? [String: Any]), b = try #require(try CLI.json(plain.stdout) as? [String: Any])
        #expect(a["tokens"] as? [Int] == b["tokens"] as? [Int])
        #expect(a["prompt_tokens"] as? Int == b["prompt_tokens"] as? Int)
        // An image given for a question without the placeholder goes in front of it (TinyLLaVA's
        // run_tiny_llava), as a chat user expects; a raw prompt is used as given and refused.
        let sample = CLI.packageRoot.appendingPathComponent("manifests/default/checkpoint/sample.png").path
        let placed = try CLI.run(["generate", "--template", "llava", "--image", sample, "--prompt", "What is here?", "--json", "--max-tokens", "3"])
        #expect(placed.status == 0, "\(placed.all)")
        let c = try #require(try CLI.json(placed.stdout) as? [String: Any])
        #expect(c["tokens"] as? [Int] == b["tokens"] as? [Int] && c["prompt_tokens"] as? Int == b["prompt_tokens"] as? Int, "\(c)")
        let raw = try CLI.run(["generate", "--image", sample, "--prompt", "What is here?", "--max-tokens", "3"])
        #expect(raw.status != 0 && raw.stderr.contains("the prompt holds 0 <image> placeholders but 1 input was given"), "\(raw.all)")
    }

    @Test func conversationFile() throws {
        let folder = try CLI.temporaryFolder()
        let file = folder.appendingPathComponent("conversation.json")
        let turns: [[String: String]] = [["role": "user", "content": "<image>\nWhat is here?"], ["role": "assistant", "content": "A cat."],
                                         ["role": "user", "content": "Sure?"]]
        try JSONSerialization.data(withJSONObject: turns).write(to: file)
        let chat = try CLI.run(["generate", "--template", "llava", "--conversation", file.path, "--json", "--max-tokens", "3"])
        let plain = try CLI.run(["generate", "--prompt", "USER: <image>\nWhat is here? ASSISTANT: A cat. USER: Sure? ASSISTANT:",
                                 "--json", "--max-tokens", "3"])
        #expect(chat.status == 0 && plain.status == 0, "\(chat.all)\(plain.all)")
        let a = try #require(try CLI.json(chat.stdout) as? [String: Any]), b = try #require(try CLI.json(plain.stdout) as? [String: Any])
        #expect(a["tokens"] as? [Int] == b["tokens"] as? [Int])
        let both = try CLI.run(["generate", "--template", "llava", "--conversation", file.path, "--prompt", "x"])
        #expect(both.status != 0 && both.stderr.contains("not both"), "\(both.all)")
        // An image given for a conversation that holds no placeholder goes in front of its first user
        // turn, as a question's does.
        let bare = folder.appendingPathComponent("bare.json")
        try JSONSerialization.data(withJSONObject: [["role": "system", "content": ""]] + turns.map { turn in
            turn.mapValues { $0.replacingOccurrences(of: "<image>\n", with: "") }
        }).write(to: bare)
        let sample = CLI.packageRoot.appendingPathComponent("manifests/default/checkpoint/sample.png").path
        let placed = try CLI.run(["generate", "--template", "llava", "--conversation", bare.path, "--image", sample, "--json", "--max-tokens", "3"])
        #expect(placed.status == 0, "\(placed.all)")
        let c = try #require(try CLI.json(placed.stdout) as? [String: Any])
        #expect(c["tokens"] as? [Int] == b["tokens"] as? [Int] && c["prompt_tokens"] as? Int == b["prompt_tokens"] as? Int, "\(c)")
    }

    /// --prompt-file (a file or stdin) stands for --prompt, --system for a conversation's system
    /// turn, and --stop adds a stop string.
    @Test func promptFileSystemAndStop() throws {
        let folder = try CLI.temporaryFolder()
        let prompt = "USER: <image>\nWhat is here? ASSISTANT:"
        let file = folder.appendingPathComponent("prompt.txt")
        try Data(prompt.utf8).write(to: file)
        let given = try CLI.run(["generate", "--prompt", prompt, "--json", "--max-tokens", "12"])
        let read = try CLI.run(["generate", "--prompt-file", file.path, "--json", "--max-tokens", "12"])
        #expect(given.status == 0 && read.status == 0, "\(given.all)\(read.all)")
        let a = try #require(try CLI.json(given.stdout) as? [String: Any]), b = try #require(try CLI.json(read.stdout) as? [String: Any])
        #expect(a["tokens"] as? [Int] == b["tokens"] as? [Int] && a["prompt_tokens"] as? Int == b["prompt_tokens"] as? Int, "\(a)\n\(b)")
        let both = try CLI.run(["generate", "--prompt-file", file.path, "--prompt", "x"])
        #expect(both.status != 0 && both.stderr.contains("give --prompt or --prompt-file, not both"), "\(both.all)")
        let missing = try CLI.run(["generate", "--prompt-file", folder.appendingPathComponent("none.txt").path])
        #expect(missing.status != 0 && missing.stderr.contains("none.txt: no such file or not readable"), "\(missing.all)")

        let conversation = folder.appendingPathComponent("conversation.json")
        try JSONSerialization.data(withJSONObject: [["role": "system", "content": "Be brief."], ["role": "user", "content": "<image>\nWhat?"]])
            .write(to: conversation)
        let turns = try CLI.run(["generate", "--template", "llava", "--conversation", conversation.path, "--json", "--max-tokens", "3"])
        let system = try CLI.run(["generate", "--template", "llava", "--system", "Be brief.", "--prompt", "<image>\nWhat?", "--json", "--max-tokens", "3"])
        #expect(turns.status == 0 && system.status == 0, "\(turns.all)\(system.all)")
        let c = try #require(try CLI.json(turns.stdout) as? [String: Any]), d = try #require(try CLI.json(system.stdout) as? [String: Any])
        #expect(c["tokens"] as? [Int] == d["tokens"] as? [Int] && c["prompt_tokens"] as? Int == d["prompt_tokens"] as? Int, "\(c)\n\(d)")
        let twice = try CLI.run(["generate", "--template", "llava", "--conversation", conversation.path, "--system", "x"])
        #expect(twice.status != 0 && twice.stderr.contains("has a system turn of its own"), "\(twice.all)")

        // A stop string taken from the middle of the answer ends it there.
        let text = try #require(a["text"] as? String)
        let cut = text.index(text.startIndex, offsetBy: text.count / 2)
        let stop = String(text[cut...].prefix(2))
        let stopped = try CLI.run(["generate", "--prompt", prompt, "--json", "--max-tokens", "12", "--stop", stop])
        let e = try #require(try CLI.json(stopped.stdout) as? [String: Any])
        #expect(e["stop_reason"] as? String == "stop", "\(e)")
        #expect((e["text"] as? String).map { !$0.contains(stop) && text.hasPrefix($0) } == true, "\(stop): \(e)")
    }

    /// --interactive answers each line of stdin with the whole conversation so far: each answer is
    /// the one a --conversation file of the same turns gets, the image is encoded once, and what the
    /// previous turns left in the KV cache is not prefilled again.
    @Test func interactiveChatIsTheConversationSoFar() throws {
        let folder = try CLI.temporaryFolder()
        let sample = CLI.packageRoot.appendingPathComponent("manifests/default/checkpoint/sample.png").path
        let chat = try CLI.run(["generate", "--template", "llava", "--image", sample, "--interactive", "--json", "--max-tokens", "4"],
                               standardInput: "What is here?\nAnd now?\nMore?\n\nnot read\n")
        #expect(chat.status == 0, "\(chat.all)")
        let answers = try chat.stdout.split(separator: "\n").map { try #require(try CLI.json(String($0)) as? [String: Any]) }
        try #require(answers.count == 3, "\(chat.all)")
        var turns: [[String: String]] = []
        for (answer, question) in zip(answers, ["What is here?", "And now?", "More?"]) {
            turns.append(["role": "user", "content": question])
            let file = folder.appendingPathComponent("turns\(turns.count).json")
            try JSONSerialization.data(withJSONObject: turns).write(to: file)
            let single = try CLI.run(["generate", "--template", "llava", "--image", sample, "--conversation", file.path, "--json", "--max-tokens", "4"])
            let expected = try #require(try CLI.json(single.stdout) as? [String: Any])
            #expect(answer["tokens"] as? [Int] == expected["tokens"] as? [Int]
                    && answer["prompt_tokens"] as? Int == expected["prompt_tokens"] as? Int, "\(answer)\n\(expected)")
            turns.append(["role": "assistant", "content": try #require(answer["text"] as? String)])
        }
        let timings = answers.compactMap { ($0["timings"] as? [String: Any])?["encode_s"] as? Double }
        #expect(timings.count == 3 && timings[1] < timings[0] / 10 && timings[2] < timings[0] / 10, "the image encoded once: \(timings)")
        let cached = answers.compactMap { $0["cached_prompt_tokens"] as? Int }, prompts = answers.compactMap { $0["prompt_tokens"] as? Int }
        #expect(cached.count == 3 && cached[0] == 0 && cached[1] > prompts[0] / 2 && cached[2] > prompts[1] / 2, "\(cached) of \(prompts)")
        // Without --interactive, a conversation that ends on an answer has that answer continued:
        // the prompt stops right after its text (transformers' continue_final_message).
        let answered = folder.appendingPathComponent("answered.json")
        try JSONSerialization.data(withJSONObject: [["role": "user", "content": "hi"], ["role": "assistant", "content": "yo"]]).write(to: answered)
        let ended = try CLI.run(["generate", "--template", "llava", "--conversation", answered.path, "--show-prompt", "--json"])
        let continued = try #require(try CLI.json(ended.stdout) as? [String: Any], "\(ended.all)")
        #expect(continued["prompt"] as? String == "USER: hi ASSISTANT: yo")
        let both = try CLI.run(["generate", "--template", "llava", "--interactive", "--prompt", "x"])
        #expect(both.status != 0 && both.stderr.contains("--interactive reads the user's turns from stdin"), "\(both.all)")
        // Refused while the subcommand runs, the message comes with its usage, not the root's.
        #expect(both.stderr.contains("Usage: chimera generate") && both.stderr.contains("See 'chimera generate --help'")
                && !both.stderr.contains("<subcommand>"), "\(both.all)")
    }

    /// A --conversation file opens an --interactive chat (its last user turn answered first), and a
    /// chat that outgrows the context drops its oldest exchange: each answer is still the one a
    /// --conversation file of the turns kept gets.
    @Test func interactiveChatOpensWithAConversationAndDropsWhatNoLongerFits() throws {
        let folder = try CLI.temporaryFolder()
        let sample = CLI.packageRoot.appendingPathComponent("manifests/default/checkpoint/sample.png").path
        func single(_ turns: [[String: String]], maxTokens: Int) throws -> [String: Any] {
            let file = folder.appendingPathComponent("turns-\(UUID().uuidString).json")
            try JSONSerialization.data(withJSONObject: turns).write(to: file)
            let run = try CLI.run(["generate", "--template", "llava", "--image", sample, "--conversation", file.path, "--json",
                                   "--max-tokens", "\(maxTokens)"])
            return try #require(try CLI.json(run.stdout) as? [String: Any], "\(run.all)")
        }
        func answers(_ run: CLI.Result) throws -> [[String: Any]] {
            try run.stdout.split(separator: "\n").map { try #require(try CLI.json(String($0)) as? [String: Any]) }
        }
        let opening = folder.appendingPathComponent("opening.json")
        try JSONSerialization.data(withJSONObject: [["role": "user", "content": "What is here?"]]).write(to: opening)
        let opened = try CLI.run(["generate", "--template", "llava", "--image", sample, "--interactive", "--conversation", opening.path,
                                  "--json", "--max-tokens", "4"], standardInput: "And now?\n")
        let first = try answers(opened)
        try #require(first.count == 2, "\(opened.all)")
        var turns = [["role": "user", "content": "What is here?"]]
        #expect(first[0]["tokens"] as? [Int] == (try single(turns, maxTokens: 4))["tokens"] as? [Int])
        turns += [["role": "assistant", "content": try #require(first[0]["text"] as? String)], ["role": "user", "content": "And now?"]]
        #expect(first[1]["tokens"] as? [Int] == (try single(turns, maxTokens: 4))["tokens"] as? [Int])

        // 240 new tokens a turn: the tiny default's 512 positions hold two turns, not three.
        let long = try CLI.run(["generate", "--template", "llava", "--image", sample, "--interactive", "--json", "--max-tokens", "240"],
                               standardInput: "What is here?\nAnd now?\nMore?\n")
        let chat = try answers(long)
        try #require(chat.count == 3, "\(long.all)")
        #expect(chat.map { $0["dropped_turns"] as? Int } == [0, 0, 2], "\(long.all)")
        #expect(long.stderr.contains("do not fit the context of 512: the oldest exchange (2 turns) is dropped"), "\(long.stderr)")
        let kept = [["role": "user", "content": "And now?"], ["role": "assistant", "content": try #require(chat[1]["text"] as? String)],
                    ["role": "user", "content": "More?"]]
        let expected = try single(kept, maxTokens: 240)
        #expect(chat[2]["tokens"] as? [Int] == expected["tokens"] as? [Int] && chat[2]["prompt_tokens"] as? Int == expected["prompt_tokens"] as? Int)

        // A turn too long for the context even alone is left out, and the chat goes on without it.
        let tooLong = String(repeating: "word ", count: 3000)
        let skipped = try CLI.run(["generate", "--template", "llava", "--image", sample, "--interactive", "--json", "--max-tokens", "4"],
                                  standardInput: "What is here?\n\(tooLong)\nAnd now?\n")
        let kept3 = try answers(skipped)
        #expect(skipped.status == 0 && kept3.count == 2, "\(skipped.all)")
        #expect(skipped.stderr.contains("longer than the context length of 512: shorten the prompt; the turn is left out"), "\(skipped.stderr)")
        let without = [["role": "user", "content": "What is here?"], ["role": "assistant", "content": try #require(kept3.first?["text"] as? String)],
                       ["role": "user", "content": "And now?"]]
        #expect(kept3.last?["tokens"] as? [Int] == (try single(without, maxTokens: 4))["tokens"] as? [Int])

        // So is a turn holding a placeholder no input was given for.
        let extra = try CLI.run(["generate", "--template", "llava", "--image", sample, "--interactive", "--json", "--max-tokens", "4"],
                                standardInput: "What is here?\nAnd <image> <image> here?\nAnd now?\n")
        let kept4 = try answers(extra)
        #expect(extra.status == 0 && kept4.count == 2, "\(extra.all)")
        #expect(extra.stderr.contains("the prompt holds 2 <image> placeholders but 1 input was given; the turn is left out"), "\(extra.stderr)")
        #expect(kept4.last?["tokens"] as? [Int] == (try single([without[0], ["role": "assistant", "content": try #require(kept4.first?["text"] as? String)],
                                                                 without[2]], maxTokens: 4))["tokens"] as? [Int])

        // So is a line that is not UTF-8 (not the question with U+FFFD in it); "\r\n" ends a line as "\n" does.
        let bytes = Data("What is here?\r\n".utf8) + Data([0x41, 0xFF, 0x42, 0x0A]) + Data("And now?\n".utf8)
        let garbled = try CLI.run(["generate", "--template", "llava", "--image", sample, "--interactive", "--json", "--max-tokens", "4"],
                                  standardInputBytes: bytes)
        let kept5 = try answers(garbled)
        #expect(garbled.status == 0 && kept5.count == 2, "\(garbled.all)")
        #expect(garbled.stderr.contains("error: the line is not UTF-8 text (byte 2 is not); the turn is left out"), "\(garbled.stderr)")
        #expect(kept5.last?["tokens"] as? [Int] == (try single([without[0], ["role": "assistant", "content": try #require(kept5.first?["text"] as? String)],
                                                                 without[2]], maxTokens: 4))["tokens"] as? [Int])
    }

    /// An answer that spells a placeholder (the tiny default's first answer here writes "<image>")
    /// joins the conversation without it: the chat goes on rather than ending on a placeholder
    /// with no input.
    @Test func interactiveAnswerSpellingAPlaceholderDoesNotEndTheChat() throws {
        let sample = CLI.packageRoot.appendingPathComponent("manifests/default/checkpoint/sample.png").path
        let chat = try CLI.run(["generate", "--template", "phi", "--image", sample, "--interactive", "--json", "--max-tokens", "200"],
                               standardInput: "hi there\nsecond turn here\n")
        let answers = try chat.stdout.split(separator: "\n").map { try #require(try CLI.json(String($0)) as? [String: Any]) }
        try #require(chat.status == 0 && answers.count == 2, "\(chat.all)")
        // The second answer is a --conversation run's whose assistant turn lacks the placeholder (the
        // image stays in front of the first user turn rather than moving to where the answer spelled it).
        let first = try #require(answers[0]["text"] as? String)
        #expect(first.contains("<image>"))
        let file = try CLI.temporaryFolder().appendingPathComponent("turns.json")
        try JSONSerialization.data(withJSONObject: [["role": "user", "content": "hi there"],
                                                    ["role": "assistant", "content": first.replacingOccurrences(of: "<image>", with: "")],
                                                    ["role": "user", "content": "second turn here"]]).write(to: file)
        let single = try CLI.run(["generate", "--template", "phi", "--image", sample, "--conversation", file.path, "--json", "--max-tokens", "200"])
        #expect(answers[1]["tokens"] as? [Int] == (try CLI.json(single.stdout) as? [String: Any])?["tokens"] as? [Int], "\(single.all)")
        #expect(chat.stderr.contains("[the answer's <image> text is left out of the conversation: there it would stand for an input]"), "\(chat.stderr)")
    }

    /// What generate streams is the answer --json reports, scalar for scalar (random tokens at a huge
    /// temperature include variation selectors that extend the character before them).
    @Test func streamedTextIsTheAnswer() throws {
        for seed in ["5", "9"] {
            let arguments = ["generate", "--llm", "chimera-tiny-default-llm", "--prompt", "hi", "--max-tokens", "100", "--temperature", "1e30", "--seed", seed]
            let streamed = try CLI.run(arguments), json = try CLI.run(arguments + ["--json"])
            let text = try #require((try CLI.json(json.stdout) as? [String: Any])?["text"] as? String, "\(json.all)")
            // (the stream ends with the newline the CLI adds after an answer)
            #expect(Array(streamed.stdout.unicodeScalars) == Array((text + "\n").unicodeScalars), "seed \(seed)")
        }
    }

    /// Placeholders are matched longest first ("<img>" does not take the start of "<img>>"), and
    /// --input takes a placeholder as the assembly spells it, angle brackets or not.
    @Test func placeholdersThatOverlapOrLackBrackets() throws {
        let folder = try CLI.temporaryFolder()
        let assembly = folder.appendingPathComponent("pair.assembly.json")
        let input = #"{"encoder": "chimera-tiny-default-vision", "connector": "chimera-tiny-default-projector", "placeholder": "PH"}"#
        try Data("""
            { "schema": "chimera.assembly/v1", "id": "pair", "language_model": "chimera-tiny-default-llm",
              "inputs": [\(input.replacingOccurrences(of: "PH", with: "<img>")), \(input.replacingOccurrences(of: "PH", with: "<img>>")),
                         \(input.replacingOccurrences(of: "PH", with: "[pic]"))] }
            """.utf8).write(to: assembly)
        let sample = CLI.packageRoot.appendingPathComponent("manifests/default/checkpoint/sample.png").path
        let r = try CLI.run(["generate", "--assembly", assembly.path, "--prompt", "<img>> then <img> then [pic]", "--max-tokens", "1", "--json",
                             "--input", "<img>>=\(sample)", "--input", "img=\(sample)", "--input", "[pic]=\(sample)"])
        #expect(r.status == 0, "\(r.all)")
        // 3 inputs of 16 patch tokens each, with the text around them.
        #expect(((try CLI.json(r.stdout) as? [String: Any])?["prompt_tokens"] as? Int ?? 0) > 48, "\(r.all)")
    }

    /// --top-k 0 keeps every token, over an assembly's own top_k (as transformers' top_k = 0).
    @Test func topKZeroTurnsAModelsTopKOff() throws {
        let assembly = try CLI.temporaryFolder().appendingPathComponent("narrow.assembly.json")
        try Data("""
            { "schema": "chimera.assembly/v1", "id": "narrow", "language_model": "chimera-tiny-default-llm", "inputs": [],
              "generation": { "max_tokens": 8, "temperature": 1.5, "top_k": 1 } }
            """.utf8).write(to: assembly)
        func tokens(_ arguments: [String]) throws -> [Int] {
            let r = try CLI.run(["generate", "--prompt", "a b c", "--json", "--seed", "3"] + arguments)
            #expect(r.status == 0, "\(r.all)")
            return try #require((try CLI.json(r.stdout) as? [String: Any])?["tokens"] as? [Int], "\(r.all)")
        }
        let greedy = try tokens(["--llm", "chimera-tiny-default-llm", "--max-tokens", "8"])
        #expect(try tokens(["--assembly", assembly.path]) == greedy)  // top_k 1: the most likely token, whatever the temperature
        #expect(try tokens(["--assembly", assembly.path, "--top-k", "0"]) != greedy)
        let negative = try CLI.run(["generate", "--top-k=-1"])
        #expect(negative.status != 0 && negative.stderr.contains("--top-k must be >= 0 (0 keeps every token), found -1"), "\(negative.all)")
    }

    /// --repetition-penalty, or an assembly's generation.repetition_penalty, changes the tiny
    /// default's repetitive greedy answer; the flag and the manifest give the same tokens.
    @Test func repetitionPenaltyFromTheFlagOrTheManifest() throws {
        let folder = try CLI.temporaryFolder()
        let assembly = folder.appendingPathComponent("penalized.assembly.json")
        try Data("""
            { "schema": "chimera.assembly/v1", "id": "penalized", "language_model": "chimera-tiny-default-llm", "inputs": [],
              "generation": { "max_tokens": 8, "repetition_penalty": 1.5 } }
            """.utf8).write(to: assembly)
        func tokens(_ arguments: [String]) throws -> [Int] {
            let r = try CLI.run(["generate", "--prompt", "a b c", "--json"] + arguments)
            #expect(r.status == 0, "\(r.all)")
            return try #require((try CLI.json(r.stdout) as? [String: Any])?["tokens"] as? [Int])
        }
        let plain = try tokens(["--llm", "chimera-tiny-default-llm", "--max-tokens", "8"])
        let flag = try tokens(["--llm", "chimera-tiny-default-llm", "--max-tokens", "8", "--repetition-penalty", "1.5"])
        let manifest = try tokens(["--assembly", assembly.path])
        #expect(flag == manifest && flag != plain, "plain \(plain), flag \(flag), manifest \(manifest)")
        #expect(try tokens(["--assembly", assembly.path, "--repetition-penalty", "1"]) == plain)
    }

    /// Options and input files the run would refuse are refused before the model loads (seconds for
    /// a real one), naming what is wrong.
    @Test func badOptionsAndInputsRefusedBeforeLoading() throws {
        let folder = try CLI.temporaryFolder()
        let missing = folder.appendingPathComponent("cat.png").path
        let sample = CLI.packageRoot.appendingPathComponent("manifests/default/checkpoint/sample.png").path
        for (arguments, message) in [(["--top-p", "2"], "--top-p must be in (0, 1], found 2.0"),
                                     (["--temperature=-1"], "--temperature must be >= 0 and finite, found -1.0"),
                                     (["--max-tokens", "-1"], "--max-tokens must be >= 0, found -1"),  // (was "Missing value")
                                     (["--temperature", "inf"], "--temperature must be >= 0 and finite, found inf"),
                                     (["--repetition-penalty", "0"], "--repetition-penalty must be positive and finite, found 0.0"),
                                     (["--stop", ""], "--stop needs a text"),
                                     (["--image", missing, "--prompt", "<image> hi"], "cannot read the input for <image>, '\(missing)': no such file"),
                                     (["--image", folder.path, "--prompt", "<image> hi"], "'\(folder.path)': it is a folder, not a file"),
                                     (["--image", sample, "--prompt", "What is this?"], "the prompt holds 0 <image> placeholders but 1 input was given"),
                                     (["--image", sample, "--prompt", "<image> <image>"], "the prompt holds 2 <image> placeholders but 1 input was given"),
                                     (["--input", "audio=\(missing)", "--prompt", "<audio> hi"],
                                      "this assembly has no input '<audio>' (its placeholders: <image>)"),
                                     (["--llm", "chimera-tiny-default-llm", "--image", missing, "--prompt", "<image> hi"],
                                      "this assembly takes no inputs (text only), but one was given for '<image>'")] {
            let r = try CLI.run(["generate", "--max-tokens", "2"] + arguments)
            #expect(r.status != 0 && r.stderr.contains(message), "\(arguments): \(r.all)")
            #expect(!r.stderr.contains("loading"), "\(arguments): \(r.all)")
        }
    }

    @Test func chatErrors() throws {
        let none = try CLI.run(["generate", "--chat", "--max-tokens", "1"])
        #expect(none.status != 0)
        #expect(none.stderr.contains("and its language model name no chat_template, and its tokenizer's folder holds none; give --template NAME (known: gemma, llama, llava"), "\(none.all)")
        let unknown = try CLI.run(["generate", "--template", "vicuna", "--max-tokens", "1"])
        #expect(unknown.status != 0 && unknown.stderr.contains("unknown chat template id 'vicuna'"), "\(unknown.all)")
    }

    @Test func listAndShowTemplates() throws {
        let r = try CLI.run(["list", "--kind", "template", "--json"])
        #expect(r.status == 0, "\(r.all)")
        let rows = try #require(try CLI.json(r.stdout) as? [[String: Any]])
        #expect(Set(rows.compactMap { $0["id"] as? String }) == ["llama", "phi", "gemma", "qwen2_base", "qwen2_instruct", "pretrain", "llava"])
        let show = try CLI.run(["show", "phi"])
        #expect(show.status == 0, "\(show.all)")
        let manifest = try #require(try CLI.json(show.stdout) as? [String: Any])
        #expect(manifest["schema"] as? String == "chimera.template/v1" && manifest["stop"] as? [String] == ["<|endoftext|>"])
        let validate = try CLI.run(["validate", CLI.packageRoot.appendingPathComponent("manifests/templates/gemma.template.json").path])
        #expect(validate.status == 0 && validate.stdout.contains("ok (gemma)"), "\(validate.all)")
    }
}
