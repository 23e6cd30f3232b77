import Chimera
import ChimeraIO
import ChimeraJinja
import ChimeraTokenizers
import Foundation

public enum ImportError: LocalizedError {
    case unreadable(file: String, reason: String)
    case unsupported(file: String, field: String, found: String, supported: String)
    case outOfRange(file: String, field: String, found: Int, range: ClosedRange<Int>)
    case missing(file: String, field: String, why: String)
    case noWeights(directory: String)
    case missingTensors(directory: String, what: String)
    case invalidValue(file: String, field: String, found: String, expected: String)
    /// The manifest import made from the checkpoint would be refused by every command that reads it.
    case invalidManifest(file: String, id: String, problems: [String])

    /// A JSON value as the file spells it (a string quoted, so that "5" is not read as 5).
    static func shown(_ value: Any) -> String {
        if let text = value as? String { return "\"\(text)\"" }
        guard let data = try? JSONSerialization.data(withJSONObject: value, options: [.fragmentsAllowed, .sortedKeys]) else { return "\(value)" }
        return String(decoding: data, as: UTF8.self)
    }

    public var errorDescription: String? {
        switch self {
        case let .unreadable(file, reason): return "\(file): \(reason)"
        case let .unsupported(file, field, found, supported):
            return "\(file): \(field) is \(found), which Chimera does not support yet (supported: \(supported))"
        case let .outOfRange(file, field, found, range):
            return "\(file): \(field) must be \(range.lowerBound)...\(range.upperBound), found \(found)"
        case let .missing(file, field, why): return "\(file): \(field) is missing: \(why)"
        case let .noWeights(directory): return "\(directory): no *.safetensors files or model.safetensors.index.json (PyTorch .bin checkpoints are not supported; convert them to safetensors)"
        case let .missingTensors(directory, what): return "\(directory): the weights hold no \(what)"
        case let .invalidValue(file, field, found, expected): return "\(file): \(field) must be \(expected), found \(found)"
        case let .invalidManifest(file, id, problems):
            return "\(file): the manifest of '\(id)' made from it would be refused (nothing was written): \(problems.joined(separator: "; "))"
        }
    }
}

/// The chat template import found in a checkpoint: a built-in's name, or a Jinja template to write,
/// or a warning that there is none Chimera can use.
struct ImportedChatTemplate {
    var name: String?
    var manifest: ChatTemplate?
    var warning: String?
}

/// What `chimera import` wrote.
public struct ImportResult: Sendable {
    /// nil for a standalone language model (no assembly is written).
    public var assemblyPath: URL?
    public var componentPaths: [URL]
    /// The checkpoint's own chat template, when import wrote it as a Jinja template.
    public var templatePath: URL?
    public var assembly: AssemblyManifest?
    /// Settings of the checkpoint that the manifests do not carry ("generation_config.json: num_beams 4 ...").
    public var warnings: [String] = []
    /// What `chimera import` prints: the assembly, or the one component of a standalone language model.
    public var mainPath: URL { assemblyPath ?? componentPaths[0] }
}

/// Turns a Hugging Face checkpoint folder into Chimera manifests that point at its weight files
/// (never copied). Supported: LLaVA (model_type "llava") with a CLIP or SigLIP vision tower and any
/// language model of `LanguageModelImport`, and those language models on their own (*ForCausalLM folders).
public struct CheckpointImporter {
    public let checkpoint: URL
    public let outputDirectory: URL
    public let name: String

    public init(checkpoint: URL, outputDirectory: URL, name: String? = nil) {
        self.checkpoint = checkpoint.standardizedFileURL
        self.outputDirectory = outputDirectory.standardizedFileURL
        self.name = Self.id(from: name ?? self.checkpoint.lastPathComponent)
    }

    /// The manifests' id for a name: lowercased, every character but letters, digits, '-', '.' and
    /// '_' a '-' ("My Model" → "my-model"), without leading '-' (an id is no option).
    public static func id(from name: String) -> String {
        let id = name.lowercased().map { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "." || $0 == "_" ? $0 : "-" }
            .reduce(into: "") { $0.append($1) }
        let trimmed = String(id.drop { $0 == "-" })
        return trimmed.isEmpty ? "model" : trimmed
    }

    func file(_ name: String) -> URL { checkpoint.appendingPathComponent(name) }

    func readJSON(_ name: String) throws -> [String: Any] { try readJSONFile(name).object }

    /// A JSON object file of the checkpoint, parsed, with its bytes (for readers that parse it their own way).
    func readJSONFile(_ name: String) throws -> (object: [String: Any], data: Data) {
        let url = file(name)
        if let reason = notARegularFile(url.path) { throw ImportError.unreadable(file: url.path, reason: reason) }
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw ImportError.unreadable(file: url.path, reason: "no such file")
        }
        guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw ImportError.unreadable(file: url.path, reason: "not a JSON object")
        }
        return (object, data)
    }

    public func run() throws -> ImportResult {
        var isFolder: ObjCBool = false
        if !FileManager.default.fileExists(atPath: checkpoint.path, isDirectory: &isFolder) {
            throw ImportError.unreadable(file: checkpoint.path, reason: "no such folder")
        }
        if !isFolder.boolValue {
            throw ImportError.unreadable(file: checkpoint.path, reason: "a file, not a checkpoint folder (give the folder that holds config.json and the weights)")
        }
        let configPath = file("config.json").path
        let config = try readJSON("config.json")
        let modelType = config["model_type"] as? String ?? "(none)"
        if LanguageModelImport.families[modelType] != nil { return try runLanguageModel(config: config, configPath: configPath) }
        if modelType == "tinyllava" { return try runTinyLLaVA(config: config, configPath: configPath) }
        if VisionImport.standaloneTypes.contains(modelType) { return try runVisionModel(config: config, configPath: configPath) }
        guard modelType == "llava" else {
            let supported = ["llava", "tinyllava"] + LanguageModelImport.supportedModelTypes + VisionImport.standaloneTypes.sorted()
            throw ImportError.unsupported(file: configPath, field: "model_type", found: "\"\(modelType)\"",
                                          supported: supported.map { "\"\($0)\"" }.joined(separator: ", "))
        }
        let (vision, text) = try visionAndTextConfigs(config, configPath: configPath, model: "a LLaVA config describes")
        let (weightFiles, store) = try openWeights()

        let encoder = try visionManifest(id: "\(name)-vision", vision: vision, section: "vision_config", store: store,
                                         weightFiles: weightFiles, configPath: configPath, preprocess: try imagePreprocessing())
        let visionHidden = try int(vision, "hidden_size", configPath, "vision_config")

        // Projector.
        guard let projectorPrefix = prefix(in: store, endingWith: "multi_modal_projector.linear_1.weight") else {
            throw ImportError.missingTensors(directory: checkpoint.path, what: "projector (no *multi_modal_projector.linear_1.weight)")
        }
        if let bias: Bool = try typedField(config, "multimodal_projector_bias", file: configPath, field: "multimodal_projector_bias", expected: "true or false"), !bias {
            throw ImportError.unsupported(file: configPath, field: "multimodal_projector_bias", found: "false", supported: "true")
        }
        let textHidden = try int(text, "hidden_size", configPath, "text_config")
        let projectorAct: String = try typedField(config, "projector_hidden_act", file: configPath, field: "projector_hidden_act", expected: "a string") ?? "gelu"
        var connector = ComponentManifest(id: "\(name)-projector", kind: .connector, family: "mlp", config: .object([
            "depth": .number(2), "activation": .string(projectorAct),
            "layer_names": .array([.string("linear_1"), .string("linear_2")]),
        ]))
        connector.inputWidth = .fixed(visionHidden)
        connector.outputWidth = .fixed(textHidden)
        connector.weights = WeightsReference(files: weightFiles.map(relative), prefix: projectorPrefix + "multi_modal_projector.")
        connector.description = "LLaVA projector of \(checkpoint.lastPathComponent)"
        connector.source = relative(checkpoint)

        // Language model.
        let (languageModel, warnings) = try languageModelManifest(id: "\(name)-llm", text: text, section: "text_config", store: store,
                                                      weightFiles: weightFiles, configPath: configPath,
                                                      tiedAtTop: try typedField(config, "tie_word_embeddings", file: configPath, field: "tie_word_embeddings", expected: "true or false"),
                                                      transformersVersion: (config["transformers_version"] as? String)
                                                          .flatMap { $0.split(separator: ".").first }.flatMap { Int($0) })

        // Assembly.
        let imageToken: Int? = try typedField(config, "image_token_index", file: configPath, field: "image_token_index", expected: "a token id")
            ?? typedField(config, "image_token_id", file: configPath, field: "image_token_id", expected: "a token id")
        let tokenizer = try Tokenizer(url: file("tokenizer.json"))
        var placeholder = "<image>"
        if let imageToken {
            guard let token = tokenizer.token(imageToken) else {
                throw ImportError.unsupported(file: configPath, field: "image_token_index", found: "\(imageToken)",
                                              supported: "an id of tokenizer.json (its vocabulary has \(tokenizer.vocabularySize))")
            }
            placeholder = token
        }
        let featureLayer: Int
        if config["vision_feature_layer"] is [Any] {
            throw ImportError.unsupported(file: configPath, field: "vision_feature_layer", found: "a list of layers", supported: "one layer index")
        }
        featureLayer = try typedField(config, "vision_feature_layer", file: configPath, field: "vision_feature_layer", expected: "one layer index (an integer)") ?? -2
        let strategy: String = try typedField(config, "vision_feature_select_strategy", file: configPath, field: "vision_feature_select_strategy",
                                              expected: "a string") ?? "default"
        guard strategy == "default" || strategy == "full" else {
            throw ImportError.unsupported(file: configPath, field: "vision_feature_select_strategy", found: "\"\(strategy)\"", supported: "\"default\", \"full\"")
        }
        var assembly = Assembler.assembly(id: name, encoder: encoder.id, connector: connector.id, languageModel: languageModel.id,
                                          placeholder: placeholder, featureLayer: featureLayer, select: strategy == "full" ? .full : .patch)
        assembly.description = "Imported from \(relative(checkpoint))"
        let chatTemplate = try chatTemplate(id: name, contentParts: [placeholder: "image"])
        assembly.chatTemplate = chatTemplate.name
        if FileManager.default.fileExists(atPath: file("sample.png").path) {
            assembly.samples = [placeholder: relative(file("sample.png"))]
        }
        return try write(assembly: assembly, components: [encoder, connector, languageModel], chatTemplate: chatTemplate, warnings: warnings)
    }

    /// The checkpoint's own chat template as written for `id`: the built-in "llava" when it is
    /// llava-hf's LLaVA-1.5 template (USER:/ASSISTANT: turns, images first), else the checkpoint's
    /// Jinja template itself, written beside the manifests (`<id>.chat_template.jinja` and the
    /// `<id>-chat` template manifest), its turns' content given as parts (`contentParts`, as a
    /// multimodal processor's template reads it) or as text. Read where transformers saves it
    /// (chat_template.jinja, chat_template.json, processor_config.json, tokenizer_config.json); one
    /// Chimera cannot render is named in a warning (`generate --template` then chooses).
    func chatTemplate(id: String, contentParts: [String: String]?) throws -> ImportedChatTemplate {
        let advice = "`generate --chat` needs --template NAME (chimera list --kind template)"
        let found: (text: String, file: URL)
        do {
            guard let template = try ChatTemplate.checkpointTemplateText(in: checkpoint) else { return ImportedChatTemplate() }
            found = template
        } catch let ChatTemplateError.unreadableJinja(file, reason) {
            return ImportedChatTemplate(warning: "\(file): \(reason); \(advice)")
        }
        if contentParts != nil {
            let compact = found.text.filter { !$0.isWhitespace }
            let llava = ["message['role'].upper()+':'", "'ASSISTANT:'", "selectattr('type','equalto','image')"]
            // Each image as "<image>" and a line break (the template's "\n" escape, or the character).
            let imageLine = found.text.contains("'<image>\\n'") || found.text.contains("'<image>\n'")
            if imageLine, llava.allSatisfy(compact.contains) { return ImportedChatTemplate(name: "llava") }
        }
        let parsed: JinjaTemplate
        do { parsed = try JinjaTemplate(found.text) } catch {
            return ImportedChatTemplate(warning: "\(found.file.path): its chat_template is Jinja Chimera does not render (\(error.errorDescription ?? "\(error)")); \(advice)")
        }
        var template = ChatTemplate(id: "\(id)-chat", jinjaFile: "\(id).chat_template.jinja", template: parsed, directory: outputDirectory)
        template.contentParts = contentParts
        template.description = "The chat template of \(checkpoint.lastPathComponent) (its \(found.file.lastPathComponent))"
        template.source = relative(found.file)
        return ImportedChatTemplate(name: template.id, manifest: template)
    }

    /// The nested vision_config and text_config of a multimodal config (`model` says who put them
    /// there), as LlavaConfig (and TinyLLaVA's copy of it) reads them: a section that does not say
    /// its model_type is "clip_vision_model" / "llama", and absent fields are its type's defaults.
    func visionAndTextConfigs(_ config: [String: Any], configPath: String, model: String) throws -> (vision: [String: Any], text: [String: Any]) {
        guard let vision = config["vision_config"] as? [String: Any] else {
            throw ImportError.missing(file: configPath, field: "vision_config", why: "\(model) its vision tower there")
        }
        guard let text = config["text_config"] as? [String: Any] else {
            throw ImportError.missing(file: configPath, field: "text_config", why: "\(model) its language model there")
        }
        let visionType = ConfigDefaults.modelType(vision, or: ConfigDefaults.visionModelType)
        let textType = ConfigDefaults.modelType(text, or: ConfigDefaults.textModelType)
        return (ConfigDefaults.filled(vision.merging(["model_type": visionType]) { given, _ in given }, modelType: visionType),
                ConfigDefaults.filled(text.merging(["model_type": textType]) { given, _ in given }, modelType: textType))
    }

    /// The checkpoint's weight files and one store over them.
    func openWeights() throws -> (files: [URL], store: WeightStore) {
        let files = try weightFileList()
        return (files, try WeightStore(files: files.map(\.path)))
    }

    /// A *ForCausalLM folder: one language-model component, no assembly.
    private func runLanguageModel(config: [String: Any], configPath: String) throws -> ImportResult {
        let (weightFiles, store) = try openWeights()
        var (lm, warnings) = try languageModelManifest(id: name, text: config, section: "", store: store, weightFiles: weightFiles,
                                                       configPath: configPath, tiedAtTop: nil, transformersVersion: nil)
        let chatTemplate = try chatTemplate(id: name, contentParts: nil)
        lm.chatTemplate = chatTemplate.name
        return try write(assembly: nil, components: [lm], chatTemplate: chatTemplate, warnings: warnings)
    }

    func languageModelManifest(id: String, text: [String: Any], section: String, store: WeightStore, weightFiles: [URL],
                                       configPath: String, tiedAtTop: Bool?, transformersVersion: Int?) throws -> (manifest: ComponentManifest, warnings: [String]) {
        let text = ConfigDefaults.filled(text, modelType: text["model_type"] as? String ?? "")  // the token ids below too
        var lm = try LanguageModelImport.manifest(id: id, text: text, section: section, file: configPath, tiedAtTop: tiedAtTop,
                                                  transformersVersion: transformersVersion)
        guard let embedName = store.tensorNames.first(where: { $0.hasSuffix("embed_tokens.weight") }) else {
            throw ImportError.missingTensors(directory: checkpoint.path, what: "language model (no *embed_tokens.weight)")
        }
        // "model.embed_tokens.weight" (standalone) or "language_model.model.embed_tokens.weight" → family
        // names under a prefix; "model.language_model.embed_tokens.weight" + top-level lm_head → a rename.
        let stem = String(embedName.dropLast("embed_tokens.weight".count))
        if stem.hasSuffix("model.") && !stem.hasSuffix("language_model.") {
            lm.weights = WeightsReference(files: weightFiles.map(relative), prefix: String(stem.dropLast("model.".count)))
        } else {
            let head = store.tensorNames.first { $0.hasSuffix("lm_head.weight") || $0.hasSuffix("lm_head.bias") } ?? "lm_head.weight"
            let headPrefix = String(head.prefix(upTo: head.range(of: "lm_head.", options: .backwards)!.upperBound))
            lm.weights = WeightsReference(files: weightFiles.map(relative), prefix: "",
                                          rename: ["model.": stem, "lm_head.": headPrefix])
        }
        // Whether the head is the embeddings follows the weights, as transformers 5 loads them: a
        // checkpoint saved with tied embeddings has no lm_head tensor, whatever its text config says
        // (a LLaVA config may tie at the top level only); one whose lm_head differs from its
        // embeddings is not tied, whatever the config says.
        var warnings: [String] = []
        if let weights = lm.weights, case var .object(object) = lm.config {
            let head = weights.storedName("lm_head.weight"), embeddings = weights.storedName("model.embed_tokens.weight")
            let configured: Bool? = if case let .bool(tied)? = object["tie_word_embeddings"] { tied } else { nil }
            // As the family reads the config (Gemma ties by default); a config it refuses is
            // refused with its reason by checkBeforeWriting.
            let tiedByConfig = (try? BuiltinFamilies.decoderArchitecture(lm))??.tiedEmbeddings ?? false
            let field = section.isEmpty ? "tie_word_embeddings" : "\(section).tie_word_embeddings (or the top level's)"
            if !store.contains(head) {
                object["tie_word_embeddings"] = .bool(true)
                if configured == false {
                    warnings.append("\(configPath): \(field) is false but the weights hold no '\(head)': the embeddings are used as the output head "
                                    + "(transformers would leave it randomly initialised)")
                }
            } else if tiedByConfig, !store.storeSameValues(head, embeddings) {
                object["tie_word_embeddings"] = .bool(false)
                warnings.append("\(configPath): \(field) ties the output head to the embeddings, but the weights hold a '\(head)' "
                                + "of other values: it is used, untied, as transformers does")
            }
            lm.config = .object(object)
        }
        // A config with fewer layers than the weights hold runs the first ones, as transformers
        // does (warning of the weights it did not use): said here, not found out from the answers.
        if case let .number(layers)? = lm.config["layers"] {
            let stored = store.tensorNames.compactMap { name -> Int? in
                guard name.hasPrefix(stem + "layers.") else { return nil }
                return Int(name.dropFirst(stem.count + "layers.".count).prefix { $0.isNumber })
            }
            if let last = stored.max(), last + 1 > Int(layers) {
                let field = section.isEmpty ? "num_hidden_layers" : "\(section).num_hidden_layers"
                let unused = last == Int(layers) ? "layer \(last) is" : "layers \(Int(layers))–\(last) are"
                warnings.append("\(configPath): \(field) is \(Int(layers)) but the weights hold \(last + 1) layers: "
                                + "\(unused) not used (as transformers, which warns of unused weights)")
            }
        }
        // LLaVA gives Phi its own lm_head, without the bias PhiForCausalLM has.
        if lm.family == "phi", let weights = lm.weights, !store.contains(weights.storedName("lm_head.bias")),
           case var .object(object) = lm.config {
            object["lm_head_bias"] = .bool(false)
            lm.config = .object(object)
        }
        let generation = try generationConfig()
        lm.generation = generation?.defaults
        guard FileManager.default.fileExists(atPath: file("tokenizer.json").path) else {
            throw ImportError.missing(file: checkpoint.path, field: "tokenizer.json",
                                      why: "a language model runs with its fast tokenizer's file (save the checkpoint with its tokenizer)")
        }
        lm.tokenizer = TokenizerReference(file: relative(file("tokenizer.json")), eosTokenIDs: try eosTokenIDs(text, generation: generation),
                                          bosTokenID: try typedField(text, "bos_token_id", file: configPath,
                                                                                 field: section.isEmpty ? "bos_token_id" : "\(section).bos_token_id", expected: "a token id"))
        lm.description = "\(lm.family) language model of \(checkpoint.lastPathComponent)"
        lm.source = relative(checkpoint)
        return (lm, warnings)
    }

    /// The checkpoint's generation_config.json, when it has one.
    func generationConfig() throws -> GenerationConfigImport? {
        guard FileManager.default.fileExists(atPath: file("generation_config.json").path) else { return nil }
        return try GenerationConfigImport(object: try readJSON("generation_config.json"), file: file("generation_config.json").path)
    }

    /// generation_config.json's eos_token_id wins (transformers' generate uses it), else text_config's:
    /// an id or a list of ids.
    func eosTokenIDs(_ text: [String: Any], generation: GenerationConfigImport?) throws -> [Int] {
        let (found, source): (Any?, String) = generation?.eosTokenID.map { ($0, "generation_config.json") } ?? (text["eos_token_id"], "config.json")
        guard let value = found, !(value is NSNull) else { return [] }
        if !isJSONBoolean(value), let one = value as? Int { return [one] }
        guard let ids = value as? [Int], !(value as? [Any] ?? []).contains(where: isJSONBoolean) else {
            throw ImportError.invalidValue(file: file(source).path, field: "eos_token_id", found: ImportError.shown(value), expected: "a token id or a list of token ids")
        }
        return ids
    }

    /// The image processor as transformers 5 loads it: processor_config.json's nested
    /// "image_processor" (saved by transformers 5) over preprocessor_config.json (older ones; a stale
    /// copy may sit beside the newer file).
    func imagePreprocessing() throws -> ImagePreprocessing {
        let processor = file("processor_config.json"), direct = file("preprocessor_config.json")
        if FileManager.default.fileExists(atPath: processor.path) {
            let config = try readJSONFile("processor_config.json")
            if let nested = config.object["image_processor"], !(nested is NSNull) {
                // The whole file goes to ImagePreprocessing: it takes the nested object and refuses
                // one that is not an object (a number, a string...).
                return try ImagePreprocessing(huggingFaceConfigData: config.data, name: processor.path)
            }
        }
        if FileManager.default.fileExists(atPath: direct.path) { return try ImagePreprocessing(huggingFaceConfig: direct) }
        throw ImportError.missing(file: direct.path, field: "preprocessor_config.json",
                                  why: "the image preprocessing (size, crop, mean, std) comes from it or from processor_config.json's image_processor")
    }

    /// A config field that may be absent or null (nil), else must be a `T`: a value of another type
    /// is named rather than taken as absent.
    func optional<T>(_ object: [String: Any], _ key: String, _ file: String, expected: String) throws -> T? {
        try typedField(object, key, file: file, field: key, expected: expected)
    }

    func weightFileList() throws -> [URL] {
        let index = file("model.safetensors.index.json")
        if FileManager.default.fileExists(atPath: index.path) { return [index] }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: checkpoint.path)) ?? []
        let files = names.filter { $0.hasSuffix(".safetensors") && $0 != "reference.safetensors" }.sorted()
        guard !files.isEmpty else { throw ImportError.noWeights(directory: checkpoint.path) }
        return files.map(file)
    }

    func prefix(in store: WeightStore, endingWith suffix: String) -> String? {
        store.tensorNames.first { $0.hasSuffix(suffix) }.map { String($0.dropLast(suffix.count)) }
    }

    func int(_ object: [String: Any], _ key: String, _ file: String, _ section: String) throws -> Int {
        try requiredField(object, key, file: file, field: "\(section).\(key)", expected: "an integer")
    }

    /// An integer field that must lie in `range`.
    func int(_ object: [String: Any], _ key: String, _ file: String, _ section: String, in range: ClosedRange<Int>) throws -> Int {
        let value = try int(object, key, file, section)
        guard range.contains(value) else {
            throw ImportError.outOfRange(file: file, field: "\(section).\(key)", found: value, range: range)
        }
        return value
    }

    /// Paths inside the output folder are written relative to it (so the folder can move);
    /// others are absolute.
    func relative(_ url: URL) -> String {
        let base = outputDirectory.path.hasSuffix("/") ? outputDirectory.path : outputDirectory.path + "/"
        let path = url.standardizedFileURL.path
        return path.hasPrefix(base) ? String(path.dropFirst(base.count)) : path
    }

    /// Checks and writes the manifests and the checkpoint's chat template; `warnings` are what the
    /// mapping itself found to report (the chat template's own follows them).
    func write(assembly: AssemblyManifest?, components: [ComponentManifest], chatTemplate: ImportedChatTemplate = ImportedChatTemplate(),
               warnings: [String] = []) throws -> ImportResult {
        try checkBeforeWriting(components, assembly: assembly)
        var result = try writeManifests(assembly: assembly, components: components, to: outputDirectory)
        if let template = chatTemplate.manifest { result.templatePath = try writeChatTemplate(template, to: outputDirectory) }
        result.warnings += warnings + (chatTemplate.warning.map { [$0] } ?? [])
        if let model = components.first(where: { $0.kind == .languageModel }), let generation = try generationConfig() {
            result.warnings += generation.warnings(file: file("generation_config.json").path, context: model.contextLength)
        }
        return result
    }
}

extension CheckpointImporter {
    /// The manifest fields import fills from a config.json field of another name, for messages.
    static let configFieldOfManifestField = [
        "context_length": "max_position_embeddings", "config.heads": "num_attention_heads", "config.layers": "num_hidden_layers",
        "config.kv_heads": "num_key_value_heads", "feature_layer": "vision_feature_layer",
    ]

    /// The problems, each naming the config's field where the manifest's has another name.
    static func namingConfigFields(_ problems: [String]) -> [String] {
        problems.map { problem in
            configFieldOfManifestField.first { problem.contains("\($0.key):") }.map { "\(problem) (the config's \($0.value))" } ?? problem
        }
    }

    /// Refuses, before anything is written, a manifest that `chimera validate` — and so every
    /// command reading the folder it lands in — would refuse: its fields as they will be read back,
    /// its family's configuration (sizes, heads, activations, ...), a language model's special
    /// token ids against its vocabulary, the assembly's fit (feature_layer, widths, tokens), and the
    /// weights each component is built over.
    func checkBeforeWriting(_ components: [ComponentManifest], assembly: AssemblyManifest?) throws {
        var catalog = Catalog()
        for component in components { try catalog.add(.component(component)) }
        let families = BuiltinFamilies.registry()
        let checker = CompatibilityChecker(catalog: catalog, families: families)
        if let assembly {
            let problems = checker.problems(assembly: assembly, filesOnDisk: false)
            if !problems.isEmpty {
                throw ImportError.invalidManifest(file: file("config.json").path, id: assembly.id, problems: Self.namingConfigFields(problems))
            }
        }
        for component in components {
            var problems: [String] = []
            do { _ = try JSONDecoder().decode(ComponentManifest.self, from: try JSONEncoder().encode(component)) } catch let error as DecodingError {
                problems.append(describe(error))
            }
            problems += checker.problems(of: component).filter { !$0.isMissingFile }.map(\.description)
            if let tokenizer = component.tokenizer, case let .number(vocabulary)? = component.config["vocab_size"] {
                // Named by the file each came from (eos_token_id: generation_config.json's wins, see eosTokenIDs).
                let eosFile = (try generationConfig())?.eosTokenID != nil ? "generation_config.json" : "config.json"
                let ids = tokenizer.eosTokenIDs.map { ($0, "eos_token_id of \(eosFile)") } + [tokenizer.bosTokenID].compactMap { $0 }.map { ($0, "bos_token_id") }
                for (id, field) in ids where id < 0 || Double(id) >= vocabulary {
                    problems.append("token id \(id) (\(field)) is outside the vocabulary of \(Int(vocabulary))")
                }
            }
            guard problems.isEmpty else {
                throw ImportError.invalidManifest(file: file("config.json").path, id: component.id, problems: Self.namingConfigFields(problems))
            }
            // Built over the mapped weights (shapes and names checked, no values read): a config that
            // does not describe its weights (a wrong connector_type, width or model_type) is refused
            // here rather than by every generate that follows.
            var located = component
            located.directory = outputDirectory
            do { _ = try families.build(located, storedMatrices: .mapped) } catch {
                let reason = (error as? LocalizedError)?.errorDescription ?? "\(error)"
                let defaulted = defaultedConfigFields()
                let hint = defaulted.isEmpty ? "" : " (config.json leaves out \(defaulted.joined(separator: ", ")): transformers' defaults for them were used)"
                throw ImportError.invalidManifest(file: file("config.json").path, id: component.id, problems: ["its weights do not fit it: " + reason + hint])
            }
        }
    }

    /// The fields of config.json (top level, text_config, vision_config) that ConfigDefaults filled
    /// in because the file leaves them out: the likely cause when the weights then do not fit.
    func defaultedConfigFields() -> [String] {
        guard let config = try? readJSON("config.json") else { return [] }
        var sections: [(name: String, object: [String: Any], type: String?)] = [("", config, config["model_type"] as? String)]
        if let text = config["text_config"] as? [String: Any] { sections.append(("text_config.", text, ConfigDefaults.modelType(text, or: ConfigDefaults.textModelType))) }
        if let vision = config["vision_config"] as? [String: Any] {
            sections.append(("vision_config.", vision, ConfigDefaults.modelType(vision, or: ConfigDefaults.visionModelType)))
        }
        return sections.flatMap { section in
            // (rope_theta and partial_rotary_factor may sit in rope_parameters instead.)
            let ropeInside = section.object["rope_parameters"] is [String: Any] ? ["rope_theta", "partial_rotary_factor"] : []
            return (ConfigDefaults.byModelType[section.type ?? ""] ?? [:]).keys.sorted()
                .filter { section.object[$0] == nil && !ropeInside.contains($0) }.map { section.name + $0 }
        }
    }
}

/// `object[key]`: nil when absent or null, else a `T`, or an error naming `field` of `file` and the
/// value as the file spells it (a config's "5" where an integer belongs is not taken as absent).
func typedField<T>(_ object: [String: Any], _ key: String, file: String, field: String, expected: String) throws -> T? {
    guard let value = object[key], !(value is NSNull) else { return nil }
    // JSON true/false cast to 1/0 and numbers to Bool: each is refused where the other is expected.
    // A number is any number where a Double is expected (a JSON 16, a Swift Int default).
    let typed: T? = isJSONBoolean(value) != (T.self == Bool.self) ? nil
        : T.self == Double.self ? (value as? NSNumber).flatMap { $0.doubleValue as? T } : value as? T
    guard let typed else { throw ImportError.invalidValue(file: file, field: field, found: ImportError.shown(value), expected: expected) }
    return typed
}

/// `typedField` where absent or null is refused too (`ImportError.missing`).
func requiredField<T>(_ object: [String: Any], _ key: String, file: String, field: String, expected: String) throws -> T {
    guard let value: T = try typedField(object, key, file: file, field: field, expected: expected) else {
        throw ImportError.missing(file: file, field: field, why: "expected \(expected)" + (object[key] is NSNull ? ", found null" : ""))
    }
    return value
}

/// A norm's epsilon as read from `object[key]`: it keeps a square root off zero, so it must be a
/// positive number (0 or a negative one was written into manifests).
func positiveEpsilon(_ value: Double, _ object: [String: Any], _ key: String, file: String, field: String) throws -> Double {
    guard value > 0, value.isFinite else {
        throw ImportError.invalidValue(file: file, field: field, found: ImportError.shown(object[key] as Any), expected: "a positive number")
    }
    return value
}

/// Whether a value JSONSerialization read is a JSON true or false (an NSNumber of type char; numbers
/// are ints or doubles), which `as? Int` would otherwise take as 1 or 0.
func isJSONBoolean(_ value: Any) -> Bool {
    guard let number = value as? NSNumber else { return false }
    return String(cString: number.objCType) == "c"
}

/// Writes a Jinja chat template's manifest (`<id>.template.json`) and its Jinja file into a folder
/// (import and quantize); returns the manifest's path.
@discardableResult
func writeChatTemplate(_ template: ChatTemplate, to outputDirectory: URL) throws -> URL {
    guard let jinja = template.jinja, let jinjaFile = template.jinjaFile else {
        throw ManifestError.invalid(file: template.origin, detail: "chat template '\(template.id)' is not a Jinja one")
    }
    try writeOutputFile(Data(jinja.source.utf8), to: outputDirectory.appendingPathComponent(jinjaFile))
    let url = outputDirectory.appendingPathComponent("\(template.id).template.json")
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    try writeOutputFile(try encoder.encode(template), to: url)
    return url
}

/// Writes `<id>.component.json` files and `<id>.assembly.json` into a folder (import and quantize).
func writeManifests(assembly: AssemblyManifest?, components: [ComponentManifest], to outputDirectory: URL) throws -> ImportResult {
    try createOutputFolder(outputDirectory)
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    var componentPaths: [URL] = []
    for component in components {
        let url = outputDirectory.appendingPathComponent("\(component.id).component.json")
        try writeOutputFile(try encoder.encode(component), to: url)
        componentPaths.append(url)
    }
    guard let assembly else { return ImportResult(assemblyPath: nil, componentPaths: componentPaths, assembly: nil) }
    let assemblyURL = outputDirectory.appendingPathComponent("\(assembly.id).assembly.json")
    try writeOutputFile(try encoder.encode(assembly), to: assemblyURL)
    return ImportResult(assemblyPath: assemblyURL, componentPaths: componentPaths, assembly: assembly)
}
