import ArgumentParser
import Chimera
import ChimeraComponents
import ChimeraIO
import ChimeraTensor
import ChimeraTokenizers
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
            return (catalog, Assembler.textOnly(component.id))
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
    @Option(parsing: .unconditional, help: "Maximum new tokens (given, a prompt that leaves less room in the context is refused; by default the assembly's or 64, bounded by that room)")
    var maxTokens: Int?
    @OptionGroup var sampling: SamplingOptions
    @Option(help: "KV cache precision: f32, or f16 (half the memory; keys and values rounded to float16)") var kvCache = KVPrecision.f32
    @Flag(help: "Wrap the prompt (or --conversation) in the assembly's chat template") var chat = false
    @Option(help: "Chat template to use instead of the assembly's: an id, a template manifest or a checkpoint's Jinja chat template file (implies --chat)") var template: String?
    @Option(help: "JSON list of {role, content} turns (system, user, assistant) to continue: answered, or, ending on an assistant turn, that answer continued (implies --chat)") var conversation: String?
    @Flag(help: "Chat turn by turn: each line of stdin is a user turn (an empty line or the end of input ends the chat; implies --chat; --conversation starts it; when the context is full the oldest exchanges are dropped)")
    var interactive = false
    @Flag(help: "Print one JSON object (tokens, text, timings) instead of streaming text (one line per answer with --interactive)") var json = false
    @Flag(help: "Print the prompt's tokens (ids, vocabulary pieces, where each input's feature rows go) against the context, then stop: nothing is loaded but the tokenizer")
    var showTokens = false
    @Flag(help: "Print the prompt's text as the model gets it (after the chat template), then stop: nothing is loaded")
    var showPrompt = false
    @OptionGroup var placement: WeightPlacementOptions
    @OptionGroup var threading: ThreadOptions

    func validate() throws {
        if stop.contains("") { throw ValidationError("--stop needs a text (an empty one would stop before the first token)") }
    }

    func run() throws {
        do {
            threading.apply()
            let (catalog, manifest) = try chosenAssembly()
            var files: [String: [URL]] = [:]
            if !image.isEmpty { files["<image>"] = image.map { URL(fileURLWithPath: $0) } }
            for item in input {
                guard let eq = item.firstIndex(of: "="), eq != item.startIndex else {
                    throw ValidationError("--input takes NAME=FILE, found '\(item)'")
                }
                let name = String(item[..<eq]), path = String(item[item.index(after: eq)...])
                // A placeholder of the assembly as spelled, or a bare name in angle brackets ("image" → "<image>").
                let placeholder = name.hasPrefix("<") || manifest.inputs.contains { $0.placeholder == name } ? name : "<\(name)>"
                files[placeholder, default: []].append(URL(fileURLWithPath: path))
            }
            if interactive {
                if showTokens || showPrompt {
                    throw ValidationError("--show-tokens and --show-prompt show one prompt: give --prompt, --prompt-file or --conversation, not --interactive")
                }
                guard prompt == nil, promptFile == nil else {
                    throw ValidationError("--interactive reads the user's turns from stdin: give no --prompt or --prompt-file (--conversation starts the chat)")
                }
                let chatTemplate = try chatTemplateInUse(catalog: catalog, manifest: manifest)
                let opening = try conversationTurns() ?? []
                try chatInteractively(try load(catalog: catalog, manifest: manifest, files: files, chat: chatTemplate),
                                      template: chatTemplate, opening: opening, given: files)
                return
            }
            let (text, chatTemplate) = try chatPrompt(catalog: catalog, manifest: manifest, given: files)
            let inputs = withSamples(files, for: text, of: manifest)
            if showPrompt {
                struct Shown: Encodable { let prompt: String; let tokenizer_adds_special_tokens: Bool }
                let adds = chatTemplate?.tokenizerAddsSpecialTokens ?? true
                if json { return try printJSON(Shown(prompt: text, tokenizer_adds_special_tokens: adds)) }
                print(text)
                return
            }
            if showTokens {
                let tokenizer = try Assembler.tokenizer(of: try catalog.component(manifest.languageModel, kind: .languageModel))
                return try printLayout(try PromptLayout(text, assembly: manifest, catalog: catalog, families: catalogOptions.families(),
                                                        tokenizer: tokenizer, inputs: inputs,
                                                        addSpecialTokens: chatTemplate?.tokenizerAddsSpecialTokens ?? true), tokenizer: tokenizer)
            }
            let loaded = try load(catalog: catalog, manifest: manifest, files: inputs, prompt: text, chat: chatTemplate)
            var options = loaded.options
            options.fitsAnswerToContext = maxTokens == nil  // (--interactive drops old exchanges instead)
            try report(try loaded.model.generate(prompt: text, inputs: inputs, options: options, onText: stream), of: manifest)
        } catch let error as ValidationError { throw error } catch { throw fail(error) }
    }
}

extension Generate {
    /// The bundled samples (the embedded default's image) for the placeholders `text` holds and no
    /// file was given for.
    func withSamples(_ files: [String: [URL]], for text: String, of manifest: AssemblyManifest) -> [String: [URL]] {
        var files = files
        for (placeholder, sample) in manifest.samples ?? [:] where files[placeholder] == nil && text.contains(placeholder) {
            files[placeholder] = [manifest.resolve(sample)]
        }
        return files
    }

    /// The assembled model and the generation options (the flags over the assembly's defaults),
    /// after refusing before loading, which can take a while, bad options, unknown placeholders,
    /// input files that are not there and, given the prompt, placeholders without an input.
    func load(catalog: Catalog, manifest: AssemblyManifest, files: [String: [URL]], prompt: String? = nil, chat: ChatTemplate?) throws
        -> (model: AssembledModel, options: GenerationOptions) {
        // The assembly's defaults over its language model's (an imported checkpoint's generation_config.json).
        let defaults = (manifest.generation ?? GenerationDefaults()).over(try catalog.component(manifest.languageModel, kind: .languageModel).generation)
        var options = GenerationOptions(maxTokens: maxTokens ?? defaults.maxTokens ?? 64,
                                        temperature: sampling.temperature ?? defaults.temperature ?? 0,
                                        topK: sampling.topK ?? defaults.topK, topP: sampling.topP ?? defaults.topP,
                                        repetitionPenalty: sampling.repetitionPenalty ?? defaults.repetitionPenalty,
                                        seed: sampling.seed, stop: (chat?.stop ?? []) + stop,
                                        kvCache: kvCache)
        options.addSpecialTokens = chat?.tokenizerAddsSpecialTokens ?? true
        try options.validate()
        try checkInputs(files, placeholders: manifest.inputs.map(\.placeholder), prompt: prompt)
        var assembler = Assembler(catalog: catalog, families: catalogOptions.families(), progress: progress)
        assembler.storedMatrices = placement.storedMatrices
        return (try assembler.build(manifest), options)
    }

    /// --show-tokens: the prompt position by position (a line a text token, one for each input's
    /// rows), or as JSON.
    func printLayout(_ layout: PromptLayout, tokenizer: Tokenizer) throws {
        let context = layout.context
        struct Segment: Encodable { var ids: [Int]?; var pieces: [String]?; var input: String?; var rows: Int? }
        struct Shown: Encodable {
            var prompt_tokens: Int, context: Int, text_tokens: Int, feature_rows: Int, ids: [Int], segments: [Segment]
        }
        let segments = layout.segments.map { segment -> Segment in
            switch segment {
            case let .text(ids): return Segment(ids: ids, pieces: ids.map { tokenizer.token($0) ?? "" })
            case let .input(_, placeholder, rows): return Segment(input: placeholder, rows: rows)
            }
        }
        let rows = segments.reduce(0) { $0 + ($1.rows ?? 0) }
        let shown = Shown(prompt_tokens: layout.tokens.count, context: context, text_tokens: layout.tokens.count - rows,
                          feature_rows: rows, ids: layout.tokens, segments: segments)
        if json { return try printJSON(shown) }
        var position = 0
        print("POSITION  ID      TOKEN")
        for segment in segments {
            if let ids = segment.ids, let pieces = segment.pieces {
                for (id, piece) in zip(ids, pieces) {
                    let columns: String = String(position).padding(toLength: 10, withPad: " ", startingAt: 0)
                        + String(id).padding(toLength: 8, withPad: " ", startingAt: 0)
                    print(columns + piece.debugDescription)
                    position += 1
                }
            } else if let input = segment.input, let count = segment.rows {
                print("\(position)-\(position + count - 1)".padding(toLength: 18, withPad: " ", startingAt: 0) + "\(input): \(count) feature rows")
                position += count
            }
        }
        print("\(shown.prompt_tokens) positions of the context's \(context) (\(shown.text_tokens) text tokens, \(rows) feature rows); "
              + "\(context - shown.prompt_tokens) left for the answer")
    }

    /// Streams answer text to stdout, unless --json.
    func stream(_ piece: String) {
        if !json, !piece.isEmpty { FileHandle.standardOutput.write(Data(piece.utf8)) }
    }

    /// After an answer: the JSON object (one line of it with --interactive), or the line that ends
    /// the streamed text and the timings on stderr.
    func report(_ result: GenerationResult, of manifest: AssemblyManifest, droppedTurns: Int? = nil) throws {
        if json {
            struct Output: Encodable {
                let assembly: String; let tokens: [Int]; let text: String; let prompt_tokens: Int; let cached_prompt_tokens: Int?
                let dropped_turns: Int?; let stop_reason: String; let timings: GenerationTimings
            }
            try printJSON(Output(assembly: manifest.id, tokens: result.tokens, text: result.text, prompt_tokens: result.promptTokens,
                                 cached_prompt_tokens: interactive ? result.cachedPromptTokens : nil, dropped_turns: droppedTurns,
                                 stop_reason: result.stopReason, timings: result.timings), oneLine: interactive)
        } else {
            FileHandle.standardOutput.write(Data("\n".utf8))  // unbuffered, like the streamed text
            let t = result.timings
            progress(String(format: "[%d prompt tokens, %d generated (%@); encode %.3f s, prefill %.1f tok/s, decode %.1f tok/s]",
                            result.promptTokens, result.tokens.count, result.stopReason, t.encodeSeconds,
                            t.prefillTokensPerSecond, t.decodeTokensPerSecond))
        }
    }

    /// --interactive: a user turn a line from stdin (an empty line or the end of input ends the
    /// chat), each answered with the whole conversation so far rendered by the chat template; the
    /// inputs go in front of the first user turn and are encoded once. The --conversation file's
    /// turns (`opening`) start the chat (its last turn, if a user's, answered first). When the
    /// conversation and the answer no longer fit the context, its oldest exchanges are dropped (the
    /// system turn stays), as a chat client's window slides; with none left to drop, an answer
    /// length not asked for is bounded by the room left.
    func chatInteractively(_ loaded: (model: AssembledModel, options: GenerationOptions), template: ChatTemplate,
                           opening: [ChatTurn], given files: [String: [URL]]) throws {
        var turns = opening
        var dropped = 0
        let session = GenerationSession()
        // Answers the conversation, dropping its oldest exchanges while it does not fit; the
        // conversation is left as it was when even the last turn alone does not.
        func answer() throws {
            var attempt = turns, droppedNow = 0, options = loaded.options
            while true {
                let text = try render(attempt, with: template, given: files, placeholders: loaded.model.manifest.inputs.map(\.placeholder))
                do {
                    let result = try loaded.model.generate(prompt: text, inputs: withSamples(files, for: text, of: loaded.model.manifest),
                                                           options: options, session: session, onText: stream)
                    dropped += droppedNow
                    try report(result, of: loaded.model.manifest, droppedTurns: dropped)
                    let placeholders = loaded.model.manifest.inputs.map(\.placeholder)
                    let (kept, removed) = ChatTurn.answer(result.text, placeholders: placeholders)
                    if removed { progress("[the answer's \(placeholders.joined(separator: ", ")) text is left out of the conversation: there it would stand for an input]") }
                    turns = attempt + [kept]
                    return
                } catch let error as PromptError {
                    guard case let .tooLong(tokens, maxTokens, context) = error else { throw error }
                    guard let shorter = ChatTurn.droppingOldestExchange(attempt) else {
                        // Nothing left to drop: an answer length not asked for is bounded by the room left.
                        if self.maxTokens == nil, !options.fitsAnswerToContext { options.fitsAnswerToContext = true; continue }
                        throw error
                    }
                    progress("[\(tokens) prompt tokens and \(maxTokens) new ones do not fit the context of \(context): "
                             + "the oldest exchange (\(shorter.dropped) turns) is dropped]")
                    attempt = shorter.turns
                    droppedNow += shorter.dropped
                }
            }
        }
        if turns.last?.role == "user" { try answer() }
        chat: while true {
            FileHandle.standardError.write(Data("> ".utf8))
            let line: String
            switch StandardInput.line() {
            case .end: break chat
            case let .text(text): line = text
            case let .notUTF8(byte):
                progress("error: the line is not UTF-8 text (byte \(byte) is not); the turn is left out")
                continue
            }
            if line.isEmpty { break }
            turns.append(ChatTurn(role: "user", content: line))
            // A turn the prompt cannot take (too long for the context even alone, a placeholder
            // with no input) is refused; the chat goes on without it.
            do { try answer() } catch let error as PromptError {
                progress("error: \(error.localizedDescription); the turn is left out")
                turns.removeLast()
            }
        }
    }

    /// The text to run: the prompt as given, or, with --chat (--template, --system,
    /// --conversation), the prompt or conversation rendered by the chat template (returned too).
    func chatPrompt(catalog: Catalog, manifest: AssemblyManifest, given files: [String: [URL]]) throws -> (String, ChatTemplate?) {
        let prompt = try promptText()
        guard chat || template != nil || conversation != nil || system != nil else {
            return (prompt ?? "USER: <image>\nDescribe the image. ASSISTANT:", nil)
        }
        let chatTemplate = try chatTemplateInUse(catalog: catalog, manifest: manifest)
        let turns: [ChatTurn]
        if conversation != nil {
            guard prompt == nil else { throw ValidationError("give --prompt (or --prompt-file) or --conversation, not both") }
            // One that ends on an answer has it continued (--interactive waits for the user's turn instead).
            turns = try conversationTurns() ?? []
        } else {
            turns = [ChatTurn(role: "user", content: prompt ?? "<image>\nDescribe the image.")]
        }
        return (try render(turns, with: chatTemplate, given: files, placeholders: manifest.inputs.map(\.placeholder)), chatTemplate)
    }

    /// The turns of the --conversation file, or nil without one.
    func conversationTurns() throws -> [ChatTurn]? {
        try conversation.map { try ChatTurn.conversation(contentsOf: URL(fileURLWithPath: $0)) }
    }

    /// --template (an id, or a file: a template manifest or a Jinja chat template), else the
    /// assembly's chat template, else its language model's; a Jinja one sees that model's
    /// tokenizer's special tokens.
    func chatTemplateInUse(catalog: Catalog, manifest: AssemblyManifest) throws -> ChatTemplate {
        let languageModel = try catalog.component(manifest.languageModel, kind: .languageModel)
        var chosen: ChatTemplate
        if let template, catalog.templates[template] == nil, template.hasSuffix(".jinja") || template.hasSuffix(".json") || template.contains("/") {
            chosen = try ChatTemplate.read(file: URL(fileURLWithPath: template))
        } else if let name = template ?? manifest.chatTemplate ?? languageModel.chatTemplate {
            chosen = try catalog.template(name)
        } else if let tokenizer = languageModel.tokenizer,
                  let own = try ChatTemplate.besideTokenizer(languageModel.resolve(tokenizer.file), id: "\(languageModel.id)-chat") {
            // As transformers' tokenizer carries it: the checkpoint's own beside its tokenizer.
            chosen = own
        } else {
            throw PromptError.badOption("--chat: assembly '\(manifest.id)' and its language model name no chat_template, and its tokenizer's folder holds none; "
                                        + "give --template NAME (known: \(catalog.templates.keys.sorted().joined(separator: ", "))) or a chat template file")
        }
        if chosen.jinja != nil, let tokenizer = languageModel.tokenizer {
            chosen.specialTokens = try Tokenizer.namedSpecialTokens(besides: languageModel.resolve(tokenizer.file))
        }
        return chosen
    }

    /// A conversation rendered by the chat template, with --system as its system turn, and inputs
    /// given for a placeholder no turn holds in front of the first user turn, a line each, as
    /// TinyLLaVA's run_tiny_llava puts the image before the query.
    func render(_ conversation: [ChatTurn], with template: ChatTemplate, given files: [String: [URL]], placeholders: [String]) throws -> String {
        var turns = conversation
        if let system {
            guard turns.first?.role != "system" else {
                throw ValidationError("--system: the conversation \(self.conversation ?? "") has a system turn of its own; give one of them")
            }
            turns.insert(ChatTurn(role: "system", content: system), at: 0)
        }
        if let first = turns.firstIndex(where: { $0.role == "user" }) {
            for (placeholder, urls) in files.sorted(by: { $0.key > $1.key }) where !turns.contains(where: { $0.content.contains(placeholder) }) {
                turns[first].content = String(repeating: placeholder + "\n", count: urls.count) + turns[first].content
            }
        }
        return try template.render(turns, keeping: placeholders, continuingAnswer: turns.last?.role == "assistant")
    }

    /// --prompt, or the text of --prompt-file (stdin for "-"); nil when neither is given.
    func promptText() throws -> String? {
        guard let promptFile else { return prompt }
        guard prompt == nil else { throw ValidationError("give --prompt or --prompt-file, not both") }
        return try readText(promptFile, flag: "--prompt-file")
    }

    /// --assembly, or an assembly made on the spot from --encoder/--connector/--llm.
    func chosenAssembly() throws -> (Catalog, AssemblyManifest) {
        let parts = [encoder, connector, llm].compactMap { $0 }
        if parts.isEmpty { return try resolveAssembly(assembly, catalogOptions: catalogOptions) }
        let catalog = try catalogOptions.catalog()
        if let llm, encoder == nil, connector == nil, assembly == nil {
            return (catalog, Assembler.textOnly(llm))
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
            if let path = result.templatePath { progress("wrote \(path.path) (the checkpoint's chat template)") }
            for warning in result.warnings { progress("warning: \(warning)") }
            print(result.mainPath.path)
        } catch { throw fail(error) }
    }
}

/// Lines of stdin as typed: Swift's `readLine` would put U+FFFD in place of bytes that are not
/// UTF-8, and the model would answer a question the user did not ask.
enum StandardInput {
    enum Line: Equatable { case text(String), notUTF8(byte: Int), end }

    /// stdin through C's buffered FILE (nothing else in the process reads it).
    nonisolated(unsafe) private static let input = fdopen(0, "r")

    /// The next line without its "\n" or "\r\n".
    static func line() -> Line {
        var buffer: UnsafeMutablePointer<CChar>?
        var capacity = 0
        defer { free(buffer) }
        guard let input else { return .end }
        let count = getline(&buffer, &capacity, input)
        guard count > 0, let buffer else { return .end }
        var bytes = UnsafeRawBufferPointer(start: buffer, count: count).map { $0 }
        if bytes.last == 10 { bytes.removeLast() }
        if bytes.last == 13 { bytes.removeLast() }
        return decoded(bytes)
    }

    static func decoded(_ bytes: [UInt8]) -> Line {
        if let text = String(validating: bytes, as: UTF8.self) { return .text(text) }
        // The first byte where decoding fails, counted from 1 as an editor's column would be.
        var iterator = bytes.makeIterator(), codec = UTF8(), consumed = 0
        while case let .scalarValue(scalar) = codec.decode(&iterator) { consumed += UTF8.width(scalar) }
        return .notUTF8(byte: consumed + 1)
    }
}
