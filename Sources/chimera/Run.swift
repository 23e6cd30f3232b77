import ArgumentParser
import Chimera
import ChimeraComponents
import ChimeraIO
import ChimeraTensor
import Foundation

extension KVPrecision: ExpressibleByArgument {}

/// The embedded default: a tiny CLIP + MLP + Llama assembly that ships with its weights.
let defaultAssemblyID = "chimera-tiny-default"

/// Finds an assembly given as a file path or an id.
func resolveAssembly(_ reference: String?, catalogOptions: CatalogOptions) throws -> (Catalog, AssemblyManifest) {
    let reference = reference ?? defaultAssemblyID
    let url = URL(fileURLWithPath: reference)
    var isFolder: ObjCBool = false
    let exists = FileManager.default.fileExists(atPath: url.path, isDirectory: &isFolder)
    if exists && isFolder.boolValue {
        // Before loading its parent as a catalogue: "/usr" would read the whole disk.
        throw ManifestError.invalid(file: url.path, detail: "--assembly is a folder; give an assembly manifest file or an id")
    }
    if reference.hasSuffix(".json") || exists {
        var catalog = try catalogOptions.catalog(including: url)
        switch try AnyManifest.load(contentsOf: url) {
        case let .assembly(assembly):
            try catalog.add(.assembly(assembly))
            return (catalog, assembly)
        case let .component(component) where component.kind == .languageModel:
            // A language model on its own runs text-only.
            return (catalog, AssemblyManifest(id: component.id, languageModel: component.id, inputs: []))
        default:
            throw ManifestError.invalid(file: url.path, detail: "--assembly needs an assembly or a language-model manifest")
        }
    }
    let catalog = try catalogOptions.catalog()
    return (catalog, try catalog.assembly(reference))
}

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run an assembly on a prompt (and images) and stream the continuation.",
        discussion: "Without --assembly, runs the embedded tiny default model on its bundled sample image.")
    @OptionGroup var catalogOptions: CatalogOptions
    @Option(help: "Assembly manifest file or id") var assembly: String?
    @Option(help: "Encoder id (with --connector and --llm: assemble on the fly instead of --assembly)") var encoder: String?
    @Option(help: "Connector id") var connector: String?
    @Option(help: "Language model id") var llm: String?
    @Option(help: "Image file for an <image> placeholder (repeatable, in prompt order)") var image: [String] = []
    @Option(help: "Input for any placeholder, NAME=FILE (repeatable)") var input: [String] = []
    @Option(help: "The prompt; <image> marks where the image goes (with --chat, an image the prompt does not place goes in front of it; default: a request to describe the image)") var prompt: String?
    @Option(help: "Read the prompt from this file (its text exactly; '-' reads stdin) instead of --prompt") var promptFile: String?
    @Option(help: "System text for the chat template, replacing its own (implies --chat)") var system: String?
    @Option(help: "Stop when the answer holds this text (repeatable; beside the chat template's stop strings)") var stop: [String] = []
    @Option(help: "Maximum new tokens") var maxTokens: Int?
    @OptionGroup var sampling: SamplingOptions
    @Option(help: "KV cache precision: f32, or f16 (half the memory; keys and values rounded to float16)") var kvCache = KVPrecision.f32
    @Flag(help: "Wrap the prompt (or --conversation) in the assembly's chat template") var chat = false
    @Option(help: "Chat template to use instead of the assembly's (implies --chat)") var template: String?
    @Option(help: "JSON list of {role, content} turns (system, user, assistant) to continue (implies --chat)") var conversation: String?
    @Flag(help: "Print one JSON object (tokens, text, timings) instead of streaming text") var json = false
    @OptionGroup var placement: WeightPlacementOptions

    func run() throws {
        do {
            let (catalog, manifest) = try chosenAssembly()
            var files: [String: [URL]] = [:]
            if !image.isEmpty { files["<image>"] = image.map { URL(fileURLWithPath: $0) } }
            for item in input {
                guard let eq = item.firstIndex(of: "="), eq != item.startIndex else {
                    throw ValidationError("--input takes NAME=FILE, found '\(item)'")
                }
                let name = String(item[..<eq]), path = String(item[item.index(after: eq)...])
                let placeholder = name.hasPrefix("<") ? name : "<\(name)>"
                files[placeholder, default: []].append(URL(fileURLWithPath: path))
            }
            let (text, stops) = try chatPrompt(catalog: catalog, manifest: manifest, given: files)
            // The bundled sample stands in when the prompt asks for an input and none is given.
            for (placeholder, sample) in manifest.samples ?? [:] where files[placeholder] == nil && text.contains(placeholder) {
                files[placeholder] = [manifest.resolve(sample)]
            }
            let defaults = manifest.generation ?? GenerationDefaults()
            let options = GenerationOptions(maxTokens: maxTokens ?? defaults.maxTokens ?? 64,
                                            temperature: sampling.temperature ?? defaults.temperature ?? 0,
                                            topK: sampling.topK ?? defaults.topK, topP: sampling.topP ?? defaults.topP,
                                            repetitionPenalty: sampling.repetitionPenalty ?? defaults.repetitionPenalty,
                                            seed: sampling.seed, stop: stops + stop,
                                            kvCache: kvCache)
            var assembler = Assembler(catalog: catalog, families: catalogOptions.families(), progress: progress)
            assembler.storedMatrices = placement.storedMatrices
            // Refused before loading, which can take a while: bad options, unknown placeholders, input files
            // that are not there.
            try options.validate()
            try checkInputs(files, placeholders: manifest.inputs.map(\.placeholder))
            let model = try assembler.build(manifest)
            let result = try model.generate(prompt: text, inputs: files, options: options) { piece in
                if !json, !piece.isEmpty {
                    FileHandle.standardOutput.write(Data(piece.utf8))
                }
            }
            if json {
                struct Output: Encodable {
                    let assembly: String; let tokens: [Int]; let text: String; let prompt_tokens: Int
                    let stop_reason: String; let timings: GenerationTimings
                }
                try printJSON(Output(assembly: manifest.id, tokens: result.tokens, text: result.text, prompt_tokens: result.promptTokens,
                                     stop_reason: result.stopReason, timings: result.timings))
            } else {
                FileHandle.standardOutput.write(Data("\n".utf8))  // unbuffered, like the streamed text
                let t = result.timings
                progress(String(format: "[%d prompt tokens, %d generated (%@); encode %.3f s, prefill %.1f tok/s, decode %.1f tok/s]",
                                result.promptTokens, result.tokens.count, result.stopReason, t.encodeSeconds,
                                t.prefillTokensPerSecond, t.decodeTokensPerSecond))
            }
        } catch let error as ValidationError { throw error } catch { throw fail(error) }
    }
}

extension Generate {
    /// The text to run and its stop strings: the prompt as given, or, with --chat (--template,
    /// --system, --conversation), the prompt or conversation rendered by the chat template.
    /// With --chat, inputs given for a placeholder the question does not hold go in front of it,
    /// a line each, as TinyLLaVA's run_tiny_llava puts the image before the query (in a
    /// conversation, in front of the first user turn, when no turn holds the placeholder).
    func chatPrompt(catalog: Catalog, manifest: AssemblyManifest, given files: [String: [URL]]) throws -> (String, [String]) {
        let prompt = try promptText()
        guard chat || template != nil || conversation != nil || system != nil else {
            return (prompt ?? "USER: <image>\nDescribe the image. ASSISTANT:", [])
        }
        guard let name = template ?? manifest.chatTemplate else {
            throw PromptError.badOption("--chat: assembly '\(manifest.id)' names no chat_template; give --template NAME (known: \(catalog.templates.keys.sorted().joined(separator: ", ")))")
        }
        let chatTemplate = try catalog.template(name)
        // Inputs for a placeholder that no text holds go in front of `text`, a line each.
        func inputsInFront(of text: String, unlessIn texts: [String]) -> String {
            var text = text
            for (placeholder, urls) in files.sorted(by: { $0.key > $1.key }) where !texts.contains(where: { $0.contains(placeholder) }) {
                text = String(repeating: placeholder + "\n", count: urls.count) + text
            }
            return text
        }
        if let conversation {
            guard prompt == nil else { throw ValidationError("give --prompt (or --prompt-file) or --conversation, not both") }
            var turns = try ChatTurn.conversation(contentsOf: URL(fileURLWithPath: conversation))
            if let system {
                guard turns.first?.role != "system" else {
                    throw ValidationError("--system: the conversation \(conversation) has a system turn of its own; give one of them")
                }
                turns.insert(ChatTurn(role: "system", content: system), at: 0)
            }
            // In a conversation, the first user turn (TinyLLaVA's training data holds the image there).
            if let first = turns.firstIndex(where: { $0.role == "user" }) {
                turns[first].content = inputsInFront(of: turns[first].content, unlessIn: turns.map(\.content))
            }
            return (try chatTemplate.render(turns), chatTemplate.stop)
        }
        let question = prompt ?? "<image>\nDescribe the image."
        let turns = (system.map { [ChatTurn(role: "system", content: $0)] } ?? [])
            + [ChatTurn(role: "user", content: inputsInFront(of: question, unlessIn: [question]))]
        return (try chatTemplate.render(turns), chatTemplate.stop)
    }

    /// --prompt, or the text of --prompt-file (stdin for "-"); nil when neither is given.
    func promptText() throws -> String? {
        guard let promptFile else { return prompt }
        guard prompt == nil else { throw ValidationError("give --prompt or --prompt-file, not both") }
        let data: Data
        if promptFile == "-" { data = FileHandle.standardInput.readDataToEndOfFile() } else {
            if let reason = notARegularFile(promptFile) { throw ValidationError("--prompt-file \(promptFile): \(reason)") }
            guard let contents = FileManager.default.contents(atPath: promptFile) else {
                throw ValidationError("--prompt-file \(promptFile): no such file or not readable")
            }
            data = contents
        }
        guard let text = String(data: data, encoding: .utf8) else { throw ValidationError("--prompt-file \(promptFile): not UTF-8 text") }
        return text
    }

    /// --assembly, or an assembly made on the spot from --encoder/--connector/--llm.
    func chosenAssembly() throws -> (Catalog, AssemblyManifest) {
        let parts = [encoder, connector, llm].compactMap { $0 }
        if parts.isEmpty { return try resolveAssembly(assembly, catalogOptions: catalogOptions) }
        let catalog = try catalogOptions.catalog()
        if let llm, encoder == nil, connector == nil, assembly == nil {
            return (catalog, AssemblyManifest(id: llm, languageModel: llm, inputs: []))  // text-only
        }
        guard parts.count == 3, assembly == nil else {
            throw ValidationError("give --encoder, --connector and --llm together, --llm alone (text only), or --assembly alone")
        }
        return (catalog, Assembler.assembly(id: parts.joined(separator: "+"), encoder: encoder!, connector: connector!, languageModel: llm!))
    }
}

struct Import: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Turn a Hugging Face checkpoint folder into Chimera manifests (weights stay where they are).",
        discussion: """
            Supported: LLaVA (model_type "llava") and TinyLLaVA_Factory ("tinyllava") checkpoints with a CLIP or SigLIP \
            vision tower and a Llama, Qwen2, Gemma, Phi or StableLM language model (prints the assembly's path); \
            standalone *ForCausalLM folders of those families and CLIP/SigLIP vision or dual-encoder folders (prints \
            the component manifest's path).
            """)
    @Argument(help: "Checkpoint folder (config.json, *.safetensors, tokenizer.json, preprocessor_config.json)") var checkpoint: String
    @Option(help: "Output folder (default: ~/.chimera/manifests/<id>, or CHIMERA_USER_HOME/manifests/<id>)") var out: String?
    @Option(help: "Name of the assembly, or of the language model when importing one alone (default: the folder's name); its id is the name lowercased, other characters than letters, digits, '-', '.' and '_' as '-'") var name: String?

    func run() throws {
        do {
            let source = URL(fileURLWithPath: checkpoint)
            let given = name ?? source.standardizedFileURL.lastPathComponent
            // The id names the default output folder: no path in it ("../x" would write elsewhere).
            let id = CheckpointImporter.id(from: given)
            guard !id.isEmpty, !id.hasPrefix(".") else {
                throw ValidationError("--name '\(given)' cannot be an id: it would be '\(id)', which names no folder of its own")
            }
            let output = out.map { URL(fileURLWithPath: $0) } ?? Catalog.importDirectory.appendingPathComponent(id)
            progress("importing \(source.path)")
            let result = try CheckpointImporter(checkpoint: source, outputDirectory: output, name: id).run()
            for path in result.componentPaths { progress("wrote \(path.path)") }
            print(result.mainPath.path)
        } catch { throw fail(error) }
    }
}
