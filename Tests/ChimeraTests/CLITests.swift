import Foundation
import Testing

/// Runs the built `chimera` executable from the package root with an empty HOME (so ~/.chimera is
/// empty) and none of the CHIMERA_* variables of the caller.
enum CLI {
    struct Result {
        let status: Int32
        let stdout: String
        let stderr: String
        var all: String { stdout + stderr }
    }

    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The executable next to the test bundle (.build/<triple>/debug/), or one level up.
    static let executable: URL? = {
        var folders: [URL] = []
        for start in [URL(fileURLWithPath: CommandLine.arguments.first ?? ""), Bundle.main.bundleURL] {
            var dir = start.resolvingSymlinksInPath()
            if !start.hasDirectoryPath || start.pathExtension == "xctest" { dir = dir.deletingLastPathComponent() }
            folders += [dir, dir.deletingLastPathComponent()]
        }
        for dir in folders {
            let candidate = dir.appendingPathComponent("chimera")
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: candidate.path, isDirectory: &isDirectory), !isDirectory.boolValue,
               FileManager.default.isExecutableFile(atPath: candidate.path) {
                return candidate
            }
        }
        return nil
    }()

    struct ExecutableNotFound: Error {}

    static func temporaryFolder() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("chimera-cli-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    static let timeLimit: Double = 600

    static func run(_ arguments: [String], environment extra: [String: String] = [:], standardInput: String? = nil) throws -> Result {
        try run(arguments, environment: extra, standardInputBytes: standardInput.map { Data($0.utf8) })
    }

    /// `run` with stdin's bytes as they are (not necessarily UTF-8).
    static func run(_ arguments: [String], environment extra: [String: String] = [:], standardInputBytes standardInput: Data?) throws -> Result {
        guard let executable else {
            Issue.record("the chimera executable was not found next to the test bundle (\(CommandLine.arguments.first ?? "?"), \(Bundle.main.bundleURL.path))")
            throw ExecutableNotFound()
        }
        let scratch = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: scratch) }
        let home = scratch.appendingPathComponent("home")
        try FileManager.default.createDirectory(at: home, withIntermediateDirectories: true)
        let out = scratch.appendingPathComponent("stdout"), err = scratch.appendingPathComponent("stderr")
        try #require(FileManager.default.createFile(atPath: out.path, contents: nil))
        try #require(FileManager.default.createFile(atPath: err.path, contents: nil))
        let outHandle = try FileHandle(forWritingTo: out), errHandle = try FileHandle(forWritingTo: err)

        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        process.currentDirectoryURL = packageRoot
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("CHIMERA_") }
        environment["HOME"] = home.path
        environment.merge(extra) { _, new in new }
        process.environment = environment
        if let standardInput {
            let file = scratch.appendingPathComponent("stdin")
            try standardInput.write(to: file)
            process.standardInput = try FileHandle(forReadingFrom: file)
        } else {
            process.standardInput = FileHandle.nullDevice
        }
        process.standardOutput = outHandle
        process.standardError = errHandle
        // A run that hangs fails its test (killed after `timeLimit`) instead of stalling the suite.
        let exited = DispatchSemaphore(value: 0)
        process.terminationHandler = { _ in exited.signal() }
        try process.run()
        if exited.wait(timeout: .now() + timeLimit) == .timedOut {
            kill(process.processIdentifier, SIGKILL)
            exited.wait()
            Issue.record("chimera \(arguments.joined(separator: " ")) did not finish within \(Int(timeLimit)) s; killed")
        }
        try outHandle.close()
        try errHandle.close()
        return Result(status: process.terminationStatus,
                      stdout: String(decoding: try Data(contentsOf: out), as: UTF8.self),
                      stderr: String(decoding: try Data(contentsOf: err), as: UTF8.self))
    }

    static func json(_ text: String) throws -> Any {
        try JSONSerialization.jsonObject(with: Data(text.utf8))
    }
}

@Suite struct CLITests {
    static let encoderID = "chimera-tiny-default-vision"
    static let connectorID = "chimera-tiny-default-projector"
    static let llmID = "chimera-tiny-default-llm"
    static let assemblyID = "chimera-tiny-default"

    @Test func executableIsFound() {
        #expect(CLI.executable != nil, "looked next to \(CommandLine.arguments.first ?? "?")")
    }

    @Test func help() throws {
        let r = try CLI.run(["--help"])
        #expect(r.status == 0, "\(r.all)")
        for command in ["list", "show", "compat", "assemble", "validate", "generate", "import"] {
            #expect(r.stdout.contains(command), "--help mentions \(command)")
        }
        let version = try CLI.run(["--version"])
        #expect(version.status == 0 && version.stdout.contains("(plugin ABI 1)"), "\(version.all)")
    }

    @Test func listHelp() throws {
        let r = try CLI.run(["list", "--help"])
        #expect(r.status == 0, "\(r.all)")
        #expect(r.stdout.contains("--kind") && r.stdout.contains("--json"))
    }

    @Test func listJSON() throws {
        let r = try CLI.run(["list", "--json"])
        #expect(r.status == 0, "\(r.all)")
        let rows = try #require(try CLI.json(r.stdout) as? [[String: Any]])
        var kinds: [String: String] = [:]
        for row in rows { kinds[row["id"] as? String ?? "?"] = row["kind"] as? String }
        // The three default components and the assembly (other built-ins may be listed too).
        for (id, kind) in [Self.encoderID: "encoder", Self.connectorID: "connector", Self.llmID: "language_model", Self.assemblyID: "assembly"] {
            #expect(kinds[id] == kind, "\(id)")
        }
        #expect(Set(kinds.values).isSubset(of: ["encoder", "connector", "language_model", "assembly"]))
        let vision = try #require(rows.first { $0["id"] as? String == Self.encoderID })
        #expect(vision["family"] as? String == "clip-vision")
        #expect(vision["modality"] as? String == "image")
        #expect((vision["origin"] as? String)?.hasSuffix("manifests/default/\(Self.encoderID).component.json") == true)
    }

    @Test func listByKind() throws {
        /// (id, kind) of each table row below the header.
        func rows(_ text: String) -> [(id: String, kind: String)] {
            text.split(separator: "\n").dropFirst().map { line in
                let words = line.split(separator: " ", omittingEmptySubsequences: true)
                return (String(words.first ?? ""), String(words.dropFirst().first ?? ""))
            }
        }
        let r = try CLI.run(["list", "--kind", "encoder"])
        #expect(r.status == 0, "\(r.all)")
        #expect(r.stdout.hasPrefix("ID"))
        let encoders = rows(r.stdout)
        #expect(encoders.contains { $0.id == Self.encoderID })
        #expect(encoders.allSatisfy { $0.kind == "encoder" }, "\(r.stdout)")
        let assemblies = try CLI.run(["list", "--kind", "assembly"])
        #expect(assemblies.status == 0)
        let assemblyRows = rows(assemblies.stdout)
        #expect(assemblyRows.contains { $0.id == Self.assemblyID })
        #expect(assemblyRows.allSatisfy { $0.kind == "assembly" }, "\(assemblies.stdout)")
    }

    @Test func listRefusesAnUnknownKind() throws {
        let r = try CLI.run(["list", "--kind", "decoder"])
        #expect(r.status != 0)
        #expect(r.stderr.contains("--kind") && r.stderr.contains("decoder"))
        // A filter nothing matches lists nothing, and says which values there are.
        let none = try CLI.run(["list", "--modality", "imgae"])
        #expect(none.status == 0 && !none.stdout.contains("encoder") && none.stderr.contains("no component matches (modalities: image"), "\(none.all)")
        let family = try CLI.run(["list", "--family", "lama", "--json"])
        let listed = try CLI.json(family.stdout) as? [Any]
        #expect(family.status == 0 && listed?.isEmpty == true, "\(family.all)")
        #expect(family.stderr.contains("no component matches (families: ") && family.stderr.contains("llama"), "\(family.all)")
    }

    @Test func showPrintsTheManifest() throws {
        let r = try CLI.run(["show", Self.llmID])
        #expect(r.status == 0, "\(r.all)")
        let manifest = try #require(try CLI.json(r.stdout) as? [String: Any])
        #expect(manifest["id"] as? String == Self.llmID)
        #expect(manifest["schema"] as? String == "chimera.component/v1")
        #expect(manifest["kind"] as? String == "language_model")
        #expect(manifest["family"] as? String == "llama")
        #expect(manifest["context_length"] as? Int == 512)
        #expect((manifest["config"] as? [String: Any])?["hidden_size"] as? Int == 128)
        #expect(r.stderr.contains("\(Self.llmID).component.json"), "says where it came from")
    }

    @Test func showUnknownID() throws {
        let r = try CLI.run(["show", "nope"])
        #expect(r.status != 0)
        #expect(r.stderr.contains("unknown"))
        #expect(r.stderr.contains(Self.llmID), "lists the known ids")
        #expect(r.stdout.isEmpty)
    }

    @Test func compatMarksTheDefaultProjectorAsFitting() throws {
        let r = try CLI.run(["compat", Self.encoderID])
        #expect(r.status == 0, "\(r.all)")
        #expect(r.stdout.contains("✓ \(Self.connectorID)"))
        #expect(!r.stdout.contains("✗ \(Self.connectorID)"))
        let j = try CLI.run(["compat", Self.encoderID, "--json"])
        let verdicts = try #require(try CLI.json(j.stdout) as? [[String: Any]])
        let projector = try #require(verdicts.first { $0["id"] as? String == Self.connectorID })
        #expect(projector["fits"] as? Bool == true)
        #expect((projector["reasons"] as? [String]) == [])
    }

    @Test func compatOfTheDefaultAssembly() throws {
        let r = try CLI.run(["compat", Self.assemblyID])
        #expect(r.status == 0, "\(r.all)")
        #expect(r.stdout.contains("all parts fit"))
    }

    @Test func assembleWritesAFileThatValidates() throws {
        let folder = try CLI.temporaryFolder()
        let file = folder.appendingPathComponent("a.json")
        let r = try CLI.run(["assemble", "--encoder", Self.encoderID, "--connector", Self.connectorID, "--llm", Self.llmID, "-o", file.path])
        #expect(r.status == 0, "\(r.all)")
        #expect(FileManager.default.fileExists(atPath: file.path))
        let written = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: file)) as? [String: Any])
        #expect(written["schema"] as? String == "chimera.assembly/v1")
        #expect(written["language_model"] as? String == Self.llmID)
        let v = try CLI.run(["validate", file.path])
        #expect(v.status == 0, "\(v.all)")
        #expect(v.stdout.contains("ok"))
    }

    /// An assembly file's folder is read for the manifests beside it, not walked: a broken
    /// manifest in a subfolder (any folder can hold an assembly: a home, /tmp) is none of its business.
    @Test func anAssemblysFolderIsReadWithoutItsSubfolders() throws {
        let assembly = try ManifestFixtures.copyOfDefaults(renamedTo: "unwalked")
        let sub = assembly.deletingLastPathComponent().appendingPathComponent("elsewhere")
        try FileManager.default.createDirectory(at: sub, withIntermediateDirectories: true)
        try Data(#"{"schema": "chimera.component/v1", "id": "stranger"}"#.utf8).write(to: sub.appendingPathComponent("stranger.component.json"))
        let r = try CLI.run(["generate", "--assembly", assembly.path, "--prompt", "hi", "--max-tokens", "2"])
        #expect(r.status == 0, "\(r.all)")
        let v = try CLI.run(["validate", assembly.path])
        #expect(v.status == 0 && v.stdout.contains("ok (unwalked)"), "\(v.all)")
        // Given as a folder of manifests, it is walked, and the stranger is reported.
        let walked = try CLI.run(["list", "--manifests", assembly.deletingLastPathComponent().path])
        #expect(walked.status != 0 && walked.stderr.contains("stranger.component.json"), "\(walked.all)")
    }

    /// plan and bench refuse a misfit as generate does (plan built the connector to the widths the
    /// assembly needed and said it fit).
    @Test func planAndBenchRefuseAMisfit() throws {
        let assembly = try ManifestFixtures.copyOfDefaults(renamedTo: "misfit")
        let projector = assembly.deletingLastPathComponent().appendingPathComponent("chimera-tiny-default-projector.component.json")
        var manifest = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: projector)) as? [String: Any])
        manifest["output_width"] = 65
        try JSONSerialization.data(withJSONObject: manifest).write(to: projector)
        for command in [["plan", assembly.path], ["bench", "--assembly", assembly.path, "--no-bandwidth", "--decode-tokens", "1", "--prompt-tokens", "4"],
                        ["generate", "--assembly", assembly.path, "--max-tokens", "1"]] {
            let r = try CLI.run(command)
            #expect(r.status != 0 && r.stderr.contains("65"), "\(command): \(r.all)")
        }
    }

    /// An end-of-sequence id past the vocabulary would never stop an answer: refused by name; an
    /// unknown kind names the kinds.
    @Test func eosOutsideTheVocabularyAndUnknownKindsAreNamed() throws {
        let assembly = try ManifestFixtures.copyOfDefaults(renamedTo: "badeos")
        let llm = assembly.deletingLastPathComponent().appendingPathComponent("chimera-tiny-default-llm.component.json")
        var manifest = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: llm)) as? [String: Any])
        var tokenizer = try #require(manifest["tokenizer"] as? [String: Any])
        tokenizer["eos_token_ids"] = [2, 99999]
        manifest["tokenizer"] = tokenizer
        try JSONSerialization.data(withJSONObject: manifest).write(to: llm)
        let r = try CLI.run(["generate", "--assembly", assembly.path, "--max-tokens", "1"])
        #expect(r.status != 0 && r.stderr.contains("\(llm.path): tokenizer.eos_token_ids: 99999 is outside the model's vocabulary of 615"), "\(r.all)")
        manifest["kind"] = "languagemodel"
        try JSONSerialization.data(withJSONObject: manifest).write(to: llm)
        let kind = try CLI.run(["validate", llm.path])
        #expect(kind.status != 0 && kind.stderr.contains("kind: unknown kind 'languagemodel' (kinds: encoder, connector, language_model)"), "\(kind.all)")
    }

    @Test func assembleRefusesAMisfit() throws {
        let folder = try CLI.temporaryFolder()
        let file = folder.appendingPathComponent("bad.json")
        // The encoder in the connector's place.
        let r = try CLI.run(["assemble", "--encoder", Self.encoderID, "--connector", Self.encoderID, "--llm", Self.llmID, "-o", file.path])
        #expect(r.status != 0)
        #expect(r.stderr.contains("does not fit"))
        #expect(!FileManager.default.fileExists(atPath: file.path))
        // An id no manifest may have, and a feature layer the encoder does not have, are refused
        // rather than written into a file every later command would refuse.
        let parts = ["assemble", "--encoder", Self.encoderID, "--connector", Self.connectorID, "--llm", Self.llmID, "-o", file.path]
        let spaced = try CLI.run(parts + ["--id", "a b"])
        #expect(spaced.status != 0 && spaced.stderr.contains("--id: ids are non-empty, hold no spaces and do not start with '-', found 'a b'"), "\(spaced.all)")
        let deep = try CLI.run(parts + ["--feature-layer", "999"])
        #expect(deep.status != 0 && deep.stderr.contains("inputs[0].feature_layer: 999 is out of range: encoder '\(Self.encoderID)' has 3 hidden states (-3...2)"),
                "\(deep.all)")
        #expect(!FileManager.default.fileExists(atPath: file.path))
        #expect(try CLI.run(parts + ["--feature-layer=-3"]).status == 0)
        #expect(try CLI.run(parts + ["--feature-layer", "-3"]).status == 0)  // a negative value after a space, too
        // An identity connector with "auto" widths keeps the encoder's width: 64 into a 128-wide
        // model does not fit (compat said it did; generate refused it after loading).
        let manifests = try CLI.temporaryFolder()
        try Data(#"{"schema": "chimera.component/v1", "id": "id-auto", "kind": "connector", "family": "identity", "config": {}, "input_width": "auto", "output_width": "auto"}"#.utf8)
            .write(to: manifests.appendingPathComponent("id-auto.component.json"))
        let identity = try CLI.run(["assemble", "--manifests", manifests.path, "--encoder", Self.encoderID, "--connector", "id-auto", "--llm", Self.llmID, "-o", file.path])
        #expect(identity.status != 0 && identity.stderr.contains("'\(Self.encoderID)' produces width 64, which 'id-auto' keeps, '\(Self.llmID)' expects 128"),
                "\(identity.all)")
    }

    @Test func validateTheShippedManifests() throws {
        let folder = CLI.packageRoot.appendingPathComponent("manifests/default")
        let files = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".json") }.sorted()
        #expect(files.count == 4)
        let r = try CLI.run(["validate"] + files.map { folder.appendingPathComponent($0).path })
        #expect(r.status == 0, "\(r.all)")
        #expect(r.stdout.components(separatedBy: ": ok").count - 1 == files.count)
    }

    @Test func validateRefusesABrokenManifestNamingTheField() throws {
        let folder = try CLI.temporaryFolder()
        let source = CLI.packageRoot.appendingPathComponent("manifests/default/\(Self.llmID).component.json")
        var manifest = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: source)) as? [String: Any])
        manifest["contxt_length"] = manifest["context_length"]
        let file = folder.appendingPathComponent("broken.component.json")
        try JSONSerialization.data(withJSONObject: manifest).write(to: file)
        let r = try CLI.run(["validate", file.path])
        #expect(r.status != 0)
        #expect(r.stderr.contains("contxt_length"))
        #expect(r.stderr.contains(file.path))
    }

    @Test func validateReportsFamilyProblems() throws {
        let folder = try CLI.temporaryFolder()
        let source = CLI.packageRoot.appendingPathComponent("manifests/default/\(Self.llmID).component.json")
        var manifest = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: source)) as? [String: Any])
        var config = try #require(manifest["config"] as? [String: Any])
        config["kv_heads"] = 3
        manifest["config"] = config
        manifest["tokenizer"] = ["file": source.deletingLastPathComponent().appendingPathComponent("checkpoint/tokenizer.json").path]
        let file = folder.appendingPathComponent("heads.component.json")
        try JSONSerialization.data(withJSONObject: manifest).write(to: file)
        let r = try CLI.run(["validate", file.path])
        #expect(r.status != 0)
        #expect(r.stderr.contains("config.kv_heads"), "\(r.all)")
    }

    @Test func generateJSON() throws {
        let r = try CLI.run(["generate", "--json", "--max-tokens", "5"])
        #expect(r.status == 0, "\(r.all)")
        let output = try #require(try CLI.json(r.stdout) as? [String: Any])
        #expect(output["assembly"] as? String == Self.assemblyID)
        let tokens = try #require(output["tokens"] as? [Int])
        #expect(tokens.count == 5)
        let timings = try #require(output["timings"] as? [String: Any])
        for key in ["encode_s", "prefill_tokens_per_s", "decode_tokens_per_s"] {
            #expect(timings[key] is Double || timings[key] is Int, "timings.\(key)")
        }
        #expect((output["prompt_tokens"] as? Int ?? 0) > 16, "the prompt holds the 16 image tokens")
    }

    /// A prompt that leaves 20 positions of the 512: without --max-tokens the answer is bounded by
    /// them (its default, 64, would not fit), in --interactive too once nothing is left to drop;
    /// --max-tokens 64 asked for is refused.
    @Test func answerLengthNotAskedForIsBoundedByTheContext() throws {
        let prompt = String(repeating: "word ", count: 98)  // 492 tokens with BOS
        let bounded = try CLI.run(["generate", "--prompt", prompt, "--json"])
        let output = try #require(try CLI.json(bounded.stdout) as? [String: Any], "\(bounded.all)")
        let count = (output["tokens"] as? [Int])?.count ?? -1
        #expect(output["prompt_tokens"] as? Int == 492)
        #expect(output["stop_reason"] as? String == "context_length" ? count == 20 : output["stop_reason"] as? String == "eos" && count < 20, "\(bounded.all)")
        let asked = try CLI.run(["generate", "--prompt", prompt, "--max-tokens", "64"])
        #expect(asked.status != 0 && asked.stderr.contains("with 64 new tokens it needs more positions than the context length of 512 (at most 20 new tokens fit)"), "\(asked.all)")
        let chat = try CLI.run(["generate", "--template", "llava", "--interactive", "--json"], standardInput: String(repeating: "word ", count: 90) + "\n")
        let line = try #require(try CLI.json(String(chat.stdout.split(separator: "\n").first ?? "")) as? [String: Any], "\(chat.all)")
        #expect(chat.status == 0 && ["context_length", "eos"].contains(line["stop_reason"] as? String ?? ""), "\(chat.all)")
    }

    /// --show-tokens lays out the prompt generate would run (the same count, with --chat too),
    /// position by position, without loading weights or encoding the image.
    @Test func showTokensIsThePromptGenerateRuns() throws {
        let sample = CLI.packageRoot.appendingPathComponent("manifests/default/checkpoint/sample.png").path
        for chat in [[], ["--chat", "--template", "llava", "--prompt", "What is it?", "--image", sample]] {
            let generated = try #require(try CLI.json(try CLI.run(["generate", "--json", "--max-tokens", "1"] + chat).stdout) as? [String: Any])
            let shown = try CLI.run(["generate", "--show-tokens", "--json"] + chat)
            #expect(shown.status == 0 && !shown.stderr.contains("loading"), "\(shown.all)")
            let layout = try #require(try CLI.json(shown.stdout) as? [String: Any])
            let count = try #require(generated["prompt_tokens"] as? Int)
            #expect(layout["prompt_tokens"] as? Int == count && (layout["ids"] as? [Int])?.count == count, "\(shown.stdout)")
            #expect(layout["feature_rows"] as? Int == 16 && layout["context"] as? Int == 512)
            let segments = try #require(layout["segments"] as? [[String: Any]])
            #expect(segments.contains { $0["input"] as? String == "<image>" && $0["rows"] as? Int == 16 })
            #expect((segments.first?["pieces"] as? [String])?.first == "<s>", "BOS first")
        }
        let text = try CLI.run(["generate", "--show-tokens"])
        #expect(text.stdout.contains("<image>: 16 feature rows") && text.stdout.contains("29 positions of the context's 512"), "\(text.all)")
        let tooMany = try CLI.run(["generate", "--show-tokens", "--prompt", "<image> <image>"])
        #expect(tooMany.status != 0 && tooMany.stderr.contains("the prompt holds 2 <image> placeholders but 1 input was given"), "\(tooMany.all)")
    }
}

/// The issue's acceptance path: `chimera import` of a transformers-saved LLaVA, then
/// `chimera generate --temperature 0 --json` returns transformers' greedy token ids.
@Suite struct CLIImportThenGenerateTests {
    @Test(arguments: ["llava-a", "llava-b", "llava-qwen2", "llava-gemma", "llava-phi", "llava-stablelm"]) func importedCheckpointGeneratesTransformersTokens(name: String) throws {
        let fixture = CLI.packageRoot.appendingPathComponent("Tests/ChimeraTests/Fixtures/\(name)")
        let reference = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: fixture.appendingPathComponent("reference.json"))) as? [String: Any])
        let out = try CLI.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: out) }
        let imported = try CLI.run(["import", fixture.path, "--out", out.path])
        #expect(imported.status == 0, "\(imported.all)")
        let assemblyPath = imported.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(assemblyPath.hasSuffix(".assembly.json"))
        let generated = try CLI.run(["generate", "--assembly", assemblyPath, "--image", fixture.appendingPathComponent("sample.png").path,
                                     "--prompt", reference["prompt"] as! String, "--temperature", "0",
                                     "--max-tokens", "\(reference["max_new_tokens"] as! Int)", "--json"])
        #expect(generated.status == 0, "\(generated.all)")
        let output = try #require(try CLI.json(generated.stdout) as? [String: Any])
        var tokens = try #require(output["tokens"] as? [Int])
        if output["stop_reason"] as? String == "eos" { tokens.append(2) }  // transformers keeps the EOS (id 2 in the fixtures)
        #expect(tokens == reference["generated"] as? [Int])
    }

    /// A family's check across fields (an odd head_dim cannot rotate) is named by the manifest's
    /// file and field in every command, plan's too (it printed Swift's DecodingError).
    @Test func familyChecksAreNamedByFileAndField() throws {
        var manifest = try ManifestFixtures.relocatable(ManifestFixtures.llmID) { $0["head_dim"] = 9 }
        manifest["id"] = "odd-head-llm"
        let folder = try CLI.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let url = try ManifestFixtures.write(manifest, to: folder, name: "odd.component.json")
        for command in [["plan", "odd-head-llm"], ["validate", url.path], ["generate", "--llm", "odd-head-llm", "--prompt", "x", "--show-tokens"]] {
            let r = try CLI.run(command + ["--manifests", folder.path])
            #expect(r.status != 0 && r.stderr.contains("\(url.path): config.head_dim: gives heads of 9 dimensions; rotary embeddings need an even number")
                    && !r.stderr.contains("DecodingError"), "\(command): \(r.all)")
        }
    }

    /// A tokenizer naming a token past the model's vocabulary (an added token beyond vocab_size)
    /// runs, as in transformers; a prompt holding that token is refused by its id.
    @Test func tokenizerLargerThanTheModelRunsUntilItsExtraTokenIsUsed() throws {
        let out = try CLI.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: out) }
        let source = packageRoot.appendingPathComponent("Tests/ChimeraTests/Fixtures/lm-llama")
        let folder = out.appendingPathComponent("lm-llama")
        try FileManager.default.copyItem(at: source, to: folder)
        let tokenizerURL = folder.appendingPathComponent("tokenizer.json")
        var tokenizer = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: tokenizerURL)) as? [String: Any])
        tokenizer["added_tokens"] = (tokenizer["added_tokens"] as? [[String: Any]] ?? []) + [
            ["id": 331, "content": "<extra>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": false]]
        try JSONSerialization.data(withJSONObject: tokenizer).write(to: tokenizerURL)
        let imported = try CLI.run(["import", folder.path, "--out", out.appendingPathComponent("manifests").path])
        #expect(imported.status == 0, "\(imported.all)")
        let manifest = imported.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let plain = try CLI.run(["generate", "--assembly", manifest, "--prompt", "The fox", "--max-tokens", "2"])
        #expect(plain.status == 0, "\(plain.all)")
        let extra = try CLI.run(["generate", "--assembly", manifest, "--prompt", "The <extra> fox", "--max-tokens", "2"])
        #expect(extra.status != 0 && extra.stderr.contains("token id 331 is outside its vocabulary of 331"), "\(extra.all)")
    }

    /// A *ForCausalLM folder imports as one language-model manifest, whose path is printed.
    @Test func standaloneLanguageModelImportPrintsItsManifest() throws {
        let out = try CLI.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: out) }
        let fixture = CLI.packageRoot.appendingPathComponent("Tests/ChimeraTests/Fixtures/lm-stablelm-a")
        let imported = try CLI.run(["import", fixture.path, "--out", out.path])
        #expect(imported.status == 0, "\(imported.all)")
        let path = imported.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(path == out.appendingPathComponent("lm-stablelm-a.component.json").path)
        #expect(try FileManager.default.contentsOfDirectory(atPath: out.path) == ["lm-stablelm-a.component.json"])
        let validated = try CLI.run(["validate", path])
        #expect(validated.status == 0, "\(validated.all)")
    }

    /// Without --out an import goes under CHIMERA_USER_HOME (or ~/.chimera), where the catalogue
    /// looks, in a folder named by the id; a --name that would leave that folder is refused.
    @Test func importsGoWhereTheCatalogueLooks() throws {
        let home = try CLI.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: home) }
        let fixture = CLI.packageRoot.appendingPathComponent("Tests/ChimeraTests/Fixtures/lm-stablelm-a")
        let imported = try CLI.run(["import", fixture.path], environment: ["CHIMERA_USER_HOME": home.path])
        #expect(imported.status == 0 && imported.stdout.hasPrefix(home.appendingPathComponent("manifests/lm-stablelm-a/").path), "\(imported.all)")
        let listed = try CLI.run(["list", "--kind", "language_model"], environment: ["CHIMERA_USER_HOME": home.path])
        #expect(listed.stdout.contains("lm-stablelm-a"), "\(listed.all)")
        let escaping = try CLI.run(["import", fixture.path, "--name", "../../x"], environment: ["CHIMERA_USER_HOME": home.path])
        #expect(escaping.status != 0 && escaping.stderr.contains("--name '../../x' cannot be an id: it would be '..-..-x'"), "\(escaping.all)")
        // The folder is the id the manifests get, not the name as given.
        let spaced = try CLI.run(["import", fixture.path, "--name", "My Model"], environment: ["CHIMERA_USER_HOME": home.path])
        #expect(spaced.status == 0 && spaced.stdout.hasPrefix(home.appendingPathComponent("manifests/my-model/").path), "\(spaced.all)")
    }

    @Test func importOfAnUnsupportedCheckpointFailsClearly() throws {
        let r = try CLI.run(["import", CLI.packageRoot.appendingPathComponent("Tests/ChimeraTests").path, "--out", try CLI.temporaryFolder().path])
        #expect(r.status != 0)
        #expect(r.stderr.contains("config.json") && r.stderr.contains("no such file"))
        // A path that is no folder, and an output folder that cannot be made, are named as such.
        let readme = CLI.packageRoot.appendingPathComponent("README.md").path
        let file = try CLI.run(["import", readme])
        #expect(file.status != 0 && file.stderr.contains("\(readme): a file, not a checkpoint folder"), "\(file.all)")
        let none = try CLI.run(["import", "/nonexistent-checkpoint"])
        #expect(none.status != 0 && none.stderr.contains("/nonexistent-checkpoint: no such folder"), "\(none.all)")
        let fixture = CLI.packageRoot.appendingPathComponent("Tests/ChimeraTests/Fixtures/lm-llama")
        let blocked = try CLI.run(["import", fixture.path, "--out", readme + "/out"])
        #expect(blocked.status != 0 && blocked.stderr.contains("\(readme)/out: cannot create the output folder: \(readme) is a file"),
                "\(blocked.all)")
        let assembled = try CLI.run(["assemble", "--encoder", CLITests.encoderID, "--connector", CLITests.connectorID, "--llm", CLITests.llmID,
                                     "-o", readme + "/a.json"])
        #expect(assembled.status != 0 && assembled.stderr.contains("\(readme)/a.json: cannot write the file: \(readme): it is a file, not a folder"),
                "\(assembled.all)")
        let full = try CLI.run(["assemble", "--encoder", CLITests.encoderID, "--connector", CLITests.connectorID, "--llm", CLITests.llmID, "-o", "/dev/full"])
        #expect(full.status != 0 && full.stderr.contains("/dev/full: cannot write the file: No space left on device"), "\(full.all)")
        // A FIFO that no one reads is refused (opening it to write would wait forever); /dev/stdout is written as before.
        let fifo = try CLI.temporaryFolder().appendingPathComponent("out.json")
        #expect(mkfifo(fifo.path, 0o644) == 0)
        let unread = try CLI.run(["assemble", "--encoder", CLITests.encoderID, "--connector", CLITests.connectorID, "--llm", CLITests.llmID, "-o", fifo.path])
        #expect(unread.status != 0 && unread.stderr.contains("\(fifo.path): cannot write the file: it is a FIFO that no process is reading"), "\(unread.all)")
        let piped = try CLI.run(["assemble", "--encoder", CLITests.encoderID, "--connector", CLITests.connectorID, "--llm", CLITests.llmID, "-o", "/dev/stdout"])
        #expect(piped.status == 0 && piped.stdout.contains("\"language_model\" : \"\(CLITests.llmID)\""), "\(piped.all)")
        let quantized = try CLI.run(["quantize", "chimera-tiny-default", "--to", "q8_0", "-o", "/proc/chimera-out"])
        #expect(quantized.status != 0 && quantized.stderr.contains("/proc/chimera-out: cannot create the output folder: No such file or directory"),
                "\(quantized.all)")
    }
}

/// For each language-model family: `chimera import` of a transformers-saved *ForCausalLM, then
/// `chimera generate --assembly <its manifest> --temperature 0 --json` (text only) returns
/// transformers' greedy ids.
@Suite struct CLIStandaloneLanguageModelTests {
    @Test(arguments: ["lm-llama", "lm-qwen2", "lm-gemma", "lm-phi", "lm-stablelm-a", "lm-stablelm-b"])
    func importedLanguageModelGeneratesTransformersTokens(name: String) throws {
        let fixture = CLI.packageRoot.appendingPathComponent("Tests/ChimeraTests/Fixtures/\(name)")
        let reference = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: fixture.appendingPathComponent("reference.json"))) as? [String: Any])
        let out = try CLI.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: out) }
        let imported = try CLI.run(["import", fixture.path, "--out", out.path])
        #expect(imported.status == 0, "\(imported.all)")
        let manifest = imported.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let generated = try CLI.run(["generate", "--assembly", manifest, "--prompt", reference["prompt"] as! String,
                                     "--temperature", "0", "--max-tokens", "\(reference["max_new_tokens"] as! Int)", "--json"])
        #expect(generated.status == 0, "\(generated.all)")
        let output = try #require(try CLI.json(generated.stdout) as? [String: Any])
        #expect(output["prompt_tokens"] as? Int == (reference["input_ids"] as? [Int])?.count)
        let expected = try #require(reference["generated"] as? [Int])
        let tokens = try #require(output["tokens"] as? [Int])
        // transformers keeps the EOS it stopped at; Chimera reports it as the stop reason.
        #expect(output["stop_reason"] as? String == "eos" ? tokens == Array(expected.dropLast()) : tokens == expected)
    }
}

/// A checkpoint's generation_config.json becomes its language model's generation defaults, which
/// `generate` applies under the assembly's and the flags: with the file alone, an imported model
/// answers as transformers' `generate(input_ids)` does with that file.
@Suite struct CLIGenerationConfigImportTests {
    /// A copy of a language-model fixture whose generation_config.json is `generation` (JSON text).
    static func fixture(_ name: String, generation: String) throws -> URL {
        let copy = try CLI.temporaryFolder().appendingPathComponent(name)
        try FileManager.default.copyItem(at: CLI.packageRoot.appendingPathComponent("Tests/ChimeraTests/Fixtures/\(name)"), to: copy)
        try Data(generation.utf8).write(to: copy.appendingPathComponent("generation_config.json"))
        return copy
    }

    /// The JSON object in a file (a manifest, a fixture's reference).
    static func object(at url: URL) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any], "\(url.path)")
    }

    static func imported(_ folder: URL) throws -> (manifest: String, result: CLI.Result) {
        let out = try CLI.temporaryFolder()
        let result = try CLI.run(["import", folder.path, "--out", out.path])
        return (result.stdout.trimmingCharacters(in: .whitespacesAndNewlines), result)
    }

    /// repetition_penalty 1.5 and max_new_tokens 10 from the file: the answer is transformers'
    /// generate(repetition_penalty=1.5) (reference_repetition.json), without a flag; a flag still wins.
    @Test(arguments: ["lm-llama", "lm-phi"]) func importedDefaultsGiveTransformersAnswer(name: String) throws {
        let folder = try Self.fixture(name, generation: #"{"bos_token_id": 1, "eos_token_id": 2, "do_sample": false, "num_beams": 1, "repetition_penalty": 1.5, "max_new_tokens": 10}"#)
        let (manifest, imported) = try Self.imported(folder)
        #expect(imported.status == 0 && !imported.stderr.contains("warning"), "\(imported.all)")
        let component = try Self.object(at: URL(fileURLWithPath: manifest))
        let generation = try #require(component["generation"] as? [String: Any])
        #expect(generation["repetition_penalty"] as? Double == 1.5 && generation["max_tokens"] as? Int == 10 && generation["temperature"] == nil)
        let reference = try Self.object(at: folder.appendingPathComponent("reference.json"))
        let repetition = try Self.object(at: folder.appendingPathComponent("reference_repetition.json"))
        let prompt = try #require(reference["prompt"] as? String)
        let generated = try CLI.run(["generate", "--assembly", manifest, "--prompt", prompt, "--json"])
        #expect(generated.status == 0, "\(generated.all)")
        let output = try #require(try CLI.json(generated.stdout) as? [String: Any])
        #expect(output["tokens"] as? [Int] == repetition["generated"] as? [Int], "\(generated.stdout)")
        let shorter = try CLI.run(["generate", "--assembly", manifest, "--prompt", prompt, "--json", "--max-tokens", "3", "--repetition-penalty", "1"])
        let shorterTokens = try #require((try CLI.json(shorter.stdout) as? [String: Any])?["tokens"] as? [Int])
        #expect(shorterTokens == Array((reference["generated"] as? [Int] ?? []).prefix(3)), "\(shorter.all)")
    }

    /// do_sample with its values (top_k 50 by transformers' default); what Chimera cannot apply is named on stderr.
    @Test func samplingSettingsAreKeptAndUnsupportedOnesNamed() throws {
        let folder = try Self.fixture("lm-qwen2", generation: #"{"eos_token_id": 2, "do_sample": true, "temperature": 0.6, "top_p": 0.9, "num_beams": 4, "no_repeat_ngram_size": 3, "typical_p": 1.0}"#)
        let (manifest, imported) = try Self.imported(folder)
        #expect(imported.status == 0, "\(imported.all)")
        #expect(imported.stderr.contains("generation_config.json: num_beams 4, no_repeat_ngram_size 3: not applied"), "\(imported.stderr)")
        let component = try Self.object(at: URL(fileURLWithPath: manifest))
        let generation = try #require(component["generation"] as? [String: Any])
        #expect((generation["temperature"] as? Double).map { abs($0 - 0.6) < 1e-6 } == true)
        #expect((generation["top_p"] as? Double).map { abs($0 - 0.9) < 1e-6 } == true)
        #expect(generation["top_k"] as? Int == 50 && generation["max_tokens"] == nil)
        // Greedy with top_k 0 (off): no sampling settings recorded at all.
        let greedy = try Self.fixture("lm-qwen2", generation: #"{"do_sample": false, "temperature": 0.6, "top_k": 0}"#)
        let (greedyManifest, _) = try Self.imported(greedy)
        let greedyComponent = try Self.object(at: URL(fileURLWithPath: greedyManifest))
        #expect(greedyComponent["generation"] == nil)
    }

    /// A max_length shorter than the context and sampling at temperature 0 are named as not applied
    /// as transformers would; a max_length of the context or more bounds nothing and is not named.
    @Test func totalLengthAndTemperatureZeroAreNamed() throws {
        let (_, short) = try Self.imported(try Self.fixture("lm-llama", generation: #"{"max_length": 20, "do_sample": true, "temperature": 0}"#))
        #expect(short.status == 0, "\(short.all)")
        #expect(short.stderr.contains("generation_config.json: max_length 20 (prompt and answer together) is not applied"), "\(short.stderr)")
        #expect(short.stderr.contains("generation_config.json: do_sample with temperature 0 is taken as greedy"), "\(short.stderr)")
        for generation in [#"{"max_length": 4096}"#, #"{"max_length": 20, "max_new_tokens": 5}"#] {
            let (_, quiet) = try Self.imported(try Self.fixture("lm-llama", generation: generation))
            #expect(quiet.status == 0 && !quiet.stderr.contains("max_length") && !quiet.stderr.contains("warning"), "\(generation): \(quiet.all)")
        }
    }

    @Test(arguments: [
        (#"{"top_p": 2}"#, "generation_config.json: top_p must be a number in (0, 1], found 2"),
        (#"{"do_sample": "yes"}"#, "generation_config.json: do_sample must be true or false, found \"yes\""),
        (#"{"top_k": "5"}"#, "generation_config.json: top_k must be an integer >= 0, found \"5\""),
        (#"{"max_new_tokens": -1}"#, "generation_config.json: max_new_tokens must be an integer >= 0, found -1"),
        (#"{"eos_token_id": 2,"#, "generation_config.json: not a JSON object"),
    ])
    func badGenerationConfigIsNamed(generation: String, expected: String) throws {
        let (_, imported) = try Self.imported(try Self.fixture("lm-llama", generation: generation))
        #expect(imported.status != 0 && imported.stderr.contains(expected), "\(imported.all)")
    }
}
