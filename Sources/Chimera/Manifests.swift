import ChimeraIO
import ChimeraTensor
import Foundation

// The manifest kinds (components, assemblies, and chat templates in Templates.swift), as Codable types that refuse unknown fields. Their JSON Schemas live in
// manifests/schema/; `chimera validate` checks files against these types.

public enum ManifestError: LocalizedError {
    case unreadable(file: String, reason: String)
    case invalid(file: String, detail: String)
    case wrongSchema(file: String, expected: String, found: String)
    case duplicateID(id: String, first: String, second: String)
    case unknownID(id: String, kind: String, known: [String])

    public var errorDescription: String? {
        switch self {
        case let .unreadable(file, reason): return "\(file): cannot read manifest: \(reason)"
        case let .invalid(file, detail): return "\(file): \(detail)"
        case let .wrongSchema(file, expected, found): return "\(file): schema: expected \"\(expected)\", found \"\(found)\""
        case let .duplicateID(id, first, second): return "duplicate id '\(id)': defined in \(first) and in \(second)"
        case let .unknownID(id, kind, known):
            // An empty catalogue is most often a binary run away from its source tree: say where manifests come from.
            let list = known.isEmpty
                ? "none are registered: no manifests were found; the built-in ones are looked for in CHIMERA_HOME/manifests, "
                    + "in a `manifests` folder above the executable and in ./manifests, others come from --manifests or CHIMERA_MANIFESTS"
                : "known: \(known.joined(separator: ", "))"
            let near = Self.nearest(to: id, in: known)
            let guess = near.isEmpty ? "" : ": did you mean " + near.map { "'\($0)'" }.joined(separator: " or ") + "?"
            return "unknown \(kind) id '\(id)'\(guess) (\(list))"
        }
    }

    /// Up to three known ids a mistyped one probably meant: the shortest of those it begins, else
    /// the closest within a few edits (a fifth of its length, at least two).
    static func nearest(to id: String, in known: [String]) -> [String] {
        let typed = Array(id.lowercased())
        // (No id is this long: a mistyped one is not, and comparing it would take minutes.)
        guard !typed.isEmpty, typed.count <= 256 else { return [] }
        let limit = max(2, typed.count / 5)
        let scored: [(id: String, score: Int)] = known.compactMap { candidate in
            let other = Array(candidate.lowercased())
            if other.starts(with: typed) { return (candidate, 0) }
            guard abs(other.count - typed.count) <= limit else { return nil }  // the distance is at least that
            let distance = editDistance(typed, other)
            return distance <= limit ? (candidate, distance) : nil
        }
        let best = scored.map(\.score).min()
        return scored.filter { $0.score == best }.sorted { ($0.id.count, $0.id) < ($1.id.count, $1.id) }.prefix(3).map(\.id)
    }

    /// Levenshtein distance (insertions, deletions, substitutions), one row at a time.
    static func editDistance(_ a: [Character], _ b: [Character]) -> Int {
        var previous = Array(0...b.count)
        for (i, x) in a.enumerated() {
            var current = [i + 1] + [Int](repeating: 0, count: b.count)
            for (j, y) in b.enumerated() {
                current[j + 1] = Swift.min(previous[j + 1] + 1, current[j] + 1, previous[j] + (x == y ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }
}

/// A width a connector may leave to the assembler.
public enum Width: Codable, Sendable, Equatable, CustomStringConvertible {
    case fixed(Int)
    case auto

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let n = try? c.decode(Int.self), (1...SizeLimits.width).contains(n) { self = .fixed(n); return }
        if let s = try? c.decode(String.self), s == "auto" { self = .auto; return }
        throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath,
                                                debugDescription: "expected a positive integer or \"auto\" (integers up to \(SizeLimits.width))"))
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self { case let .fixed(n): try c.encode(n); case .auto: try c.encode("auto") }
    }
    public var value: Int? { if case let .fixed(n) = self { return n }; return nil }
    public var description: String { value.map(String.init) ?? "auto" }
}

public struct WeightsReference: Codable, Sendable, Equatable {
    /// safetensors files or a model.safetensors.index.json, relative to the manifest's folder.
    public var files: [String]
    /// Prefix of this component's tensors inside those files ("model.vision_tower.").
    public var prefix: String
    /// Where a checkpoint stores parts of a component apart: a leading part of the family's own
    /// tensor names → its stored form, e.g. {"model.": "model.language_model.", "lm_head.": "lm_head."}.
    /// The longest matching rule wins; names no rule matches get `prefix`.
    public var rename: [String: String]?
    /// Present when the files hold quantized blocks (written by `chimera quantize`).
    public var quantization: WeightQuantization?
    public init(files: [String], prefix: String = "", rename: [String: String]? = nil, quantization: WeightQuantization? = nil) {
        self.files = files; self.prefix = prefix; self.rename = rename; self.quantization = quantization
    }
    enum CodingKeys: String, CodingKey, CaseIterable { case files, prefix, rename, quantization }
    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        files = try c.decode([String].self, forKey: .files)
        prefix = try c.decodeIfPresent(String.self, forKey: .prefix) ?? ""
        rename = try c.decodeIfPresent([String: String].self, forKey: .rename)
        quantization = try c.decodeIfPresent(WeightQuantization.self, forKey: .quantization)
        if files.isEmpty {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath + [CodingKeys.files], debugDescription: "lists no file"))
        }
    }

    /// The stored name of one of the component's tensors.
    public func storedName(_ name: String) -> String {
        if let rename, let rule = rename.keys.filter({ name.hasPrefix($0) }).max(by: { $0.count < $1.count }) {
            return rename[rule]! + name.dropFirst(rule.count)
        }
        return prefix + name
    }
}

/// How quantized weight files are laid out: documentation for readers of the files. The loader
/// recognizes quantized tensors by their dtype and `.scales` companion, so this never changes numerics.
public struct WeightQuantization: Codable, Sendable, Equatable {
    /// "q8_0" or "q4_0".
    public var format: String
    public var blockSize: Int
    /// The stored form, in words.
    public var layout: String
    /// Tensors kept at higher precision, and why.
    public var higherPrecision: [String]

    public init(format: String, blockSize: Int = 32, layout: String, higherPrecision: [String]) {
        self.format = format; self.blockSize = blockSize; self.layout = layout; self.higherPrecision = higherPrecision
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case format, layout
        case blockSize = "block_size", higherPrecision = "higher_precision"
    }

    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        format = try c.decode(String.self, forKey: .format)
        blockSize = try c.decode(Int.self, forKey: .blockSize)
        layout = try c.decode(String.self, forKey: .layout)
        higherPrecision = try c.decodeIfPresent([String].self, forKey: .higherPrecision) ?? []
        guard WeightFormat(rawValue: format)?.isQuantized == true else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath + [CodingKeys.format],
                                                   debugDescription: "unknown quantization '\(format)' (known: \(WeightFormat.quantizedNames))"))
        }
        guard blockSize == 32 else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath + [CodingKeys.blockSize],
                                                   debugDescription: "block size \(blockSize) is not supported (only 32)"))
        }
    }
}

/// How a language model's tokenizer is found and which ids end generation.
public struct TokenizerReference: Codable, Sendable, Equatable {
    public var file: String
    public var eosTokenIDs: [Int]
    public var bosTokenID: Int?
    public init(file: String, eosTokenIDs: [Int], bosTokenID: Int? = nil) {
        self.file = file; self.eosTokenIDs = eosTokenIDs; self.bosTokenID = bosTokenID
    }
    enum CodingKeys: String, CodingKey, CaseIterable { case file, eosTokenIDs = "eos_token_ids", bosTokenID = "bos_token_id" }
    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        file = try c.decode(String.self, forKey: .file)
        eosTokenIDs = try c.decodeIfPresent([Int].self, forKey: .eosTokenIDs) ?? []
        bosTokenID = try c.decodeIfPresent(Int.self, forKey: .bosTokenID)
    }
}

public struct ComponentManifest: Codable, Sendable, Equatable {
    public static let schemaVersion = "chimera.component/v1"
    public var schema: String
    public var id: String
    public var kind: ComponentKind
    public var family: String
    public var description: String?
    /// Encoders: "image", "audio", "sensor", ...
    public var modality: String?
    /// Family-specific shape and options, decoded by the family.
    public var config: JSONValue
    /// Encoders: what one hidden state looks like.
    public var output: TokenContract?
    /// Connectors: widths, possibly left to the assembler.
    public var inputWidth: Width?
    public var outputWidth: Width?
    /// Image encoders: how files become pixel values.
    public var preprocess: ImagePreprocessing?
    /// Language models.
    public var tokenizer: TokenizerReference?
    public var contextLength: Int?
    /// Language models: defaults for `generate` (a checkpoint's generation_config.json, imported),
    /// under an assembly's own `generation`.
    public var generation: GenerationDefaults?
    /// Language models: the chat template `generate --chat` uses when the assembly names none (an
    /// imported instruct model's own, as a Jinja template).
    public var chatTemplate: String?
    /// Absent only for connectors, which are then freshly initialized with `seed`.
    public var weights: WeightsReference?
    public var seed: UInt64?
    public var source: String?

    /// Folder of the file this manifest came from; relative paths resolve against it.
    public var directory: URL = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
    /// Where the manifest came from, shown by `list` and in errors.
    public var origin: String = "built-in"

    enum CodingKeys: String, CodingKey, CaseIterable {
        case schema, id, kind, family, description, modality, config, output, preprocess, tokenizer, generation, weights, seed, source
        case inputWidth = "input_width", outputWidth = "output_width", contextLength = "context_length", chatTemplate = "chat_template"
    }

    public init(id: String, kind: ComponentKind, family: String, config: JSONValue) {
        schema = Self.schemaVersion
        self.id = id; self.kind = kind; self.family = family; self.config = config
    }

    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        schema = try c.decode(String.self, forKey: .schema)
        id = try c.decode(String.self, forKey: .id)
        kind = try c.decode(ComponentKind.self, forKey: .kind)
        family = try c.decode(String.self, forKey: .family)
        description = try c.decodeIfPresent(String.self, forKey: .description)
        modality = try c.decodeIfPresent(String.self, forKey: .modality)
        config = try c.decodeIfPresent(JSONValue.self, forKey: .config) ?? .object([:])
        output = try c.decodeIfPresent(TokenContract.self, forKey: .output)
        inputWidth = try c.decodeIfPresent(Width.self, forKey: .inputWidth)
        outputWidth = try c.decodeIfPresent(Width.self, forKey: .outputWidth)
        preprocess = try c.decodeIfPresent(ImagePreprocessing.self, forKey: .preprocess)
        tokenizer = try c.decodeIfPresent(TokenizerReference.self, forKey: .tokenizer)
        contextLength = try c.decodeIfPresent(Int.self, forKey: .contextLength)
        generation = try c.decodeIfPresent(GenerationDefaults.self, forKey: .generation)
        chatTemplate = try c.decodeIfPresent(String.self, forKey: .chatTemplate)
        weights = try c.decodeIfPresent(WeightsReference.self, forKey: .weights)
        seed = try c.decodeIfPresent(UInt64.self, forKey: .seed)
        source = try c.decodeIfPresent(String.self, forKey: .source)
        try checkManifestID(id, key: CodingKeys.id)
        if let contextLength, !(1...SizeLimits.tokens).contains(contextLength) {
            throw DecodingError.dataCorrupted(.init(codingPath: [CodingKeys.contextLength],
                                                    debugDescription: "must be positive and at most \(SizeLimits.tokens), found \(contextLength)"))
        }
        if case .object = config {} else {
            throw DecodingError.dataCorrupted(.init(codingPath: [CodingKeys.config], debugDescription: "expected an object"))
        }
        if kind != .languageModel, generation != nil {
            throw DecodingError.dataCorrupted(.init(codingPath: [CodingKeys.generation], debugDescription: "only language models take generation defaults"))
        }
        if kind != .languageModel, chatTemplate != nil {
            throw DecodingError.dataCorrupted(.init(codingPath: [CodingKeys.chatTemplate], debugDescription: "only language models name a chat template"))
        }
        switch kind {
        case .encoder:
            if modality == nil { throw missing(.modality, "encoders name their modality") }
            if output == nil { throw missing(.output, "encoders declare their output {width, tokens}") }
        case .connector:
            if inputWidth == nil { throw missing(.inputWidth, "connectors declare input_width (an integer or \"auto\")") }
            if outputWidth == nil { throw missing(.outputWidth, "connectors declare output_width (an integer or \"auto\")") }
        case .languageModel:
            if tokenizer == nil { throw missing(.tokenizer, "language models name their tokenizer") }
            if contextLength == nil { throw missing(.contextLength, "language models declare context_length") }
            if weights == nil { throw missing(.weights, "language models need weights") }
        }
        if kind != .connector, weights == nil {
            throw missing(.weights, "only connectors may start without weights")
        }
    }

    /// A field this kind requires: reported as "output: required field is missing (why)".
    private func missing(_ key: CodingKeys, _ why: String) -> DecodingError {
        .dataCorrupted(.init(codingPath: [key], debugDescription: "required field is missing (\(why))"))
    }

    /// Resolves a path from the manifest against its folder ("~/" is the user's home).
    public func resolve(_ path: String) -> URL { resolveManifestPath(path, in: directory) }

    /// The safetensors files behind `weights.files`. An entry ending in "/" names a checkpoint
    /// folder (as downloaded, one file or sharded): its model.safetensors.index.json when there is
    /// one, else every *.safetensors in it.
    public func weightFiles() throws -> [URL] {
        try (weights?.files ?? []).flatMap { entry -> [URL] in
            let url = resolve(entry)
            guard entry.hasSuffix("/") else { return [url] }
            let fm = FileManager.default
            let index = url.appendingPathComponent("model.safetensors.index.json")
            if fm.fileExists(atPath: index.path) { return [index] }
            let shards = ((try? fm.contentsOfDirectory(atPath: url.path)) ?? []).filter { $0.hasSuffix(".safetensors") }.sorted()
            guard !shards.isEmpty else {
                throw ManifestError.unreadable(file: url.path, reason: "weights folder of '\(id)' holds no *.safetensors (see `chimera list`: how to provide weights)")
            }
            return shards.map { url.appendingPathComponent($0) }
        }
    }

    /// Weight and tokenizer paths this manifest names that are not on disk (a weights folder
    /// counts as missing while it holds no safetensors).
    public var missingFiles: [String] {
        var entries = weights?.files ?? []
        if let tokenizer { entries.append(tokenizer.file) }
        let fm = FileManager.default
        return entries.compactMap { entry in
            let path = resolve(entry).path
            if !entry.hasSuffix("/") { return fm.fileExists(atPath: path) ? nil : path }
            let items = (try? fm.contentsOfDirectory(atPath: path)) ?? []
            return items.contains { $0.hasSuffix(".safetensors") } ? nil : path + "/"
        }
    }

    /// Decodes the family config into the family's own type, reporting errors under "config.".
    public func decodeConfig<T: Decodable>(_ type: T.Type) throws -> T {
        let data = try JSONEncoder().encode(config)
        do {
            return try JSONDecoder().decode(T.self, from: data)
        } catch let error as DecodingError {
            // Foundation reports a field holding a number its type cannot (an integer field's 1e20, a
            // float32 field's 1e300) as invalid JSON, with no path: name the number instead.
            if case let .dataCorrupted(context) = error, context.codingPath.isEmpty,
               let (path, value) = config.first(where: { number in
                   number.doubleValue.map { abs($0) > Double(Float.greatestFiniteMagnitude) || ($0 == $0.rounded() && Int(exactly: $0) == nil) } ?? false
               }) {
                throw ManifestError.invalid(file: originFile, detail: "config.\(path): \(value) is beyond the range of its field (an integer's or a float32's)")
            }
            throw ManifestError.invalid(file: originFile, detail: "config." + describe(error))
        }
    }

    public var originFile: String { origin == "built-in" ? "manifest '\(id)'" : origin }
}

/// One placeholder of an assembly: which encoder reads the input and which connector maps it.
public struct InputBinding: Codable, Sendable, Equatable {
    public enum Selection: String, Codable, Sendable, CaseIterable {
        /// Drop the first token (HF "default", TinyLLaVA "patch").
        case patch
        /// Keep every token (HF "full", TinyLLaVA "cls_patch").
        case full

        public init(from decoder: Decoder) throws {
            let raw = try decoder.singleValueContainer().decode(String.self)
            switch raw {
            case "patch", "default": self = .patch
            case "full", "cls_patch": self = .full
            default:
                throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath,
                    debugDescription: "expected \"patch\" (or \"default\") or \"full\" (or \"cls_patch\"), found \"\(raw)\""))
            }
        }
    }
    public var placeholder: String
    public var encoder: String
    public var connector: String
    public var featureLayer: Int
    public var select: Selection

    public init(placeholder: String = "<image>", encoder: String, connector: String, featureLayer: Int = -2, select: Selection = .patch) {
        self.placeholder = placeholder; self.encoder = encoder; self.connector = connector
        self.featureLayer = featureLayer; self.select = select
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case placeholder, encoder, connector, select, featureLayer = "feature_layer"
    }
    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        placeholder = try c.decodeIfPresent(String.self, forKey: .placeholder) ?? "<image>"
        encoder = try c.decode(String.self, forKey: .encoder)
        connector = try c.decode(String.self, forKey: .connector)
        featureLayer = try c.decodeIfPresent(Int.self, forKey: .featureLayer) ?? -2
        select = try c.decodeIfPresent(Selection.self, forKey: .select) ?? .patch
    }
}

public struct GenerationDefaults: Codable, Sendable, Equatable {
    public var maxTokens: Int?
    public var temperature: Float?
    public var topK: Int?
    public var topP: Float?
    public var repetitionPenalty: Float?
    public init(maxTokens: Int? = nil, temperature: Float? = nil, topK: Int? = nil, topP: Float? = nil, repetitionPenalty: Float? = nil) {
        self.maxTokens = maxTokens; self.temperature = temperature; self.topK = topK; self.topP = topP
        self.repetitionPenalty = repetitionPenalty
    }
    enum CodingKeys: String, CodingKey, CaseIterable {
        case temperature, maxTokens = "max_tokens", topK = "top_k", topP = "top_p", repetitionPenalty = "repetition_penalty"
    }
    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        maxTokens = try c.decodeIfPresent(Int.self, forKey: .maxTokens)
        // Read as Double: a number beyond Float's range (1e39) made Foundation's decoder call the
        // whole file "not valid JSON"; as infinity it is refused by its field's range below.
        func float(_ key: CodingKeys) throws -> Float? { try c.decodeIfPresent(Double.self, forKey: key).map { Float($0) } }
        temperature = try float(.temperature)
        topK = try c.decodeIfPresent(Int.self, forKey: .topK)
        topP = try float(.topP)
        repetitionPenalty = try float(.repetitionPenalty)
        // Checked here so that a bad default is named by its field rather than by the command-line
        // flag it stands in for.
        func check<Value>(_ value: Value?, _ range: (Value) -> String?, _ key: CodingKeys) throws {
            guard let value, let expected = range(value) else { return }
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath + [key], debugDescription: "must be \(expected), found \(value)"))
        }
        try check(maxTokens, GenerationRanges.maxTokens, .maxTokens)
        try check(temperature, GenerationRanges.temperature, .temperature)
        try check(topK, GenerationRanges.topK, .topK)
        try check(topP, GenerationRanges.topP, .topP)
        try check(repetitionPenalty, GenerationRanges.repetitionPenalty, .repetitionPenalty)
    }

    /// These defaults, each field that is unset taken from `fallback` (an assembly's own over its
    /// language model's).
    public func over(_ fallback: GenerationDefaults?) -> GenerationDefaults {
        guard let fallback else { return self }
        return GenerationDefaults(maxTokens: maxTokens ?? fallback.maxTokens, temperature: temperature ?? fallback.temperature,
                                  topK: topK ?? fallback.topK, topP: topP ?? fallback.topP,
                                  repetitionPenalty: repetitionPenalty ?? fallback.repetitionPenalty)
    }
}

public struct AssemblyManifest: Codable, Sendable, Equatable {
    public static let schemaVersion = "chimera.assembly/v1"
    public var schema: String
    public var id: String
    public var description: String?
    public var languageModel: String
    public var inputs: [InputBinding]
    public var chatTemplate: String?
    public var generation: GenerationDefaults?
    /// A sample input per placeholder, relative to the manifest (used by the embedded default).
    public var samples: [String: String]?
    public var directory: URL = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
    public var origin: String = "built-in"

    /// Its parts' ids, each once: the language model, then each input's encoder and connector.
    public var componentIDs: [String] {
        var seen: Set<String> = []
        return ([languageModel] + inputs.flatMap { [$0.encoder, $0.connector] }).filter { seen.insert($0).inserted }
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case schema, id, description, inputs, generation, samples
        case languageModel = "language_model", chatTemplate = "chat_template"
    }

    public init(id: String, languageModel: String, inputs: [InputBinding]) {
        schema = Self.schemaVersion
        self.id = id; self.languageModel = languageModel; self.inputs = inputs
    }

    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        schema = try c.decode(String.self, forKey: .schema)
        id = try c.decode(String.self, forKey: .id)
        description = try c.decodeIfPresent(String.self, forKey: .description)
        languageModel = try c.decode(String.self, forKey: .languageModel)
        inputs = try c.decodeIfPresent([InputBinding].self, forKey: .inputs) ?? []
        chatTemplate = try c.decodeIfPresent(String.self, forKey: .chatTemplate)
        generation = try c.decodeIfPresent(GenerationDefaults.self, forKey: .generation)
        samples = try c.decodeIfPresent([String: String].self, forKey: .samples)
        try checkManifestID(id, key: CodingKeys.id)
        let placeholders = inputs.map(\.placeholder)
        if Set(placeholders).count != placeholders.count {
            throw DecodingError.dataCorrupted(.init(codingPath: [CodingKeys.inputs], debugDescription: "a placeholder is bound twice"))
        }
    }

    public func resolve(_ path: String) -> URL { resolveManifestPath(path, in: directory) }
}

/// Ids are looked up exactly, so they must be non-empty and hold no spaces; they are typed on
/// command lines, where one starting with "-" would read as an option.
func checkManifestID(_ id: String, key: some CodingKey) throws {
    if !isValidManifestID(id) { throw DecodingError.dataCorrupted(.init(codingPath: [key], debugDescription: manifestIDRule)) }
}

/// Whether `id` can name a manifest (`manifestIDRule`).
public func isValidManifestID(_ id: String) -> Bool { !id.isEmpty && !id.hasPrefix("-") && !id.contains(where: { $0.isWhitespace }) }
public let manifestIDRule = "ids are non-empty, hold no spaces and do not start with '-'"

/// The user's folders: HOME (NSHomeDirectory ignores it on Linux), and Chimera's own under it.
public enum UserFolders {
    public static var home: URL { URL(fileURLWithPath: ProcessInfo.processInfo.environment["HOME"] ?? NSHomeDirectory()) }
    /// CHIMERA_USER_HOME, else ~/.chimera: installed plugins (plugins/) and imported manifests (manifests/).
    public static var chimera: URL {
        ProcessInfo.processInfo.environment["CHIMERA_USER_HOME"].map { URL(fileURLWithPath: $0) } ?? home.appendingPathComponent(".chimera")
    }
}

/// A manifest's path: absolute, "~/..." under the home folder (HOME), or relative to the manifest.
func resolveManifestPath(_ path: String, in directory: URL) -> URL {
    if path == "~" || path.hasPrefix("~/") {
        return UserFolders.home.appendingPathComponent(String(path.dropFirst(path == "~" ? 1 : 2)))
    }
    return path.hasPrefix("/") ? URL(fileURLWithPath: path) : directory.appendingPathComponent(path)
}

/// Any manifest kind, read from a file.
public enum AnyManifest: Sendable {
    case component(ComponentManifest)
    case assembly(AssemblyManifest)
    case template(ChatTemplate)

    public static let schemas = [ComponentManifest.schemaVersion, AssemblyManifest.schemaVersion, ChatTemplate.schemaVersion]

    public var id: String {
        switch self {
        case let .component(m): return m.id
        case let .assembly(m): return m.id
        case let .template(m): return m.id
        }
    }

    /// Reads and checks a manifest file; errors name the file and the JSON path.
    public static func load(contentsOf url: URL) throws -> AnyManifest {
        let file = url.path
        if let reason = notARegularFile(file) { throw ManifestError.unreadable(file: file, reason: reason) }
        guard let data = FileManager.default.contents(atPath: file) else {
            throw ManifestError.unreadable(file: file, reason: "no such file or not readable")
        }
        return try parse(data, file: file, directory: url.deletingLastPathComponent())
    }

    public static func parse(_ data: Data, file: String, directory: URL) throws -> AnyManifest {
        let parsed: Any
        do { parsed = try JSONSerialization.jsonObject(with: data) } catch {
            let reason = (error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String ?? error.localizedDescription
            throw ManifestError.invalid(file: file, detail: "not valid JSON: \(reason)")
        }
        guard let object = parsed as? [String: Any] else {
            throw ManifestError.invalid(file: file, detail: "not a JSON object")
        }
        // JSON readers disagree on a repeated key (Foundation's decoder takes the first, Python and
        // JSONSerialization the last): refused rather than read one way here and another there.
        if let repeated = JSONKeyScanner.firstRepeatedKey(in: data) {
            throw ManifestError.invalid(file: file, detail: "\(repeated): the key is given twice in its object")
        }
        guard let schema = object["schema"] as? String else {
            throw ManifestError.invalid(file: file, detail: "schema: required field is missing (\"\(schemas.joined(separator: "\", \""))\")")
        }
        do {
            switch schema {
            case ComponentManifest.schemaVersion:
                var m = try JSONDecoder().decode(ComponentManifest.self, from: data)
                m.directory = directory; m.origin = file
                return .component(m)
            case AssemblyManifest.schemaVersion:
                var m = try JSONDecoder().decode(AssemblyManifest.self, from: data)
                m.directory = directory; m.origin = file
                return .assembly(m)
            case ChatTemplate.schemaVersion:
                var m = try JSONDecoder().decode(ChatTemplate.self, from: data)
                m.directory = directory; m.origin = file
                try m.loadJinja()
                return .template(m)
            default:
                throw ManifestError.wrongSchema(file: file, expected: schemas.joined(separator: "\", \""), found: schema)
            }
        } catch let error as DecodingError {
            throw ManifestError.invalid(file: file, detail: describe(error))
        }
    }
}

/// Finds a key an object of a valid JSON text repeats (JSONSerialization keeps one silently).
enum JSONKeyScanner {
    /// The dotted path of the first repeated key ("config.context_length"), or nil.
    static func firstRepeatedKey(in data: Data) -> String? {
        var scanner = Scanner(bytes: [UInt8](data))
        return scanner.value(path: "")
    }

    private struct Scanner {
        let bytes: [UInt8]
        var i = 0

        mutating func skipSpace() { while i < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[i]) { i += 1 } }

        /// A string's raw bytes between its quotes (escapes left as written), `i` past its end.
        mutating func string() -> [UInt8] {
            let start = i + 1
            i += 1
            while i < bytes.count, bytes[i] != 0x22 { i += bytes[i] == 0x5C ? 2 : 1 }
            defer { i += 1 }
            return Array(bytes[start..<min(i, bytes.count)])
        }

        /// Scans one value (the text is valid JSON); returns the path of a repeated key inside it.
        mutating func value(path: String) -> String? {
            skipSpace()
            guard i < bytes.count else { return nil }
            switch bytes[i] {
            case 0x7B:  // {
                i += 1
                var seen = Set<[UInt8]>()
                while true {
                    skipSpace()
                    if i >= bytes.count || bytes[i] == 0x7D { i += 1; return nil }
                    if bytes[i] == 0x2C { i += 1; continue }
                    let key = string()
                    let name = String(decoding: key, as: UTF8.self), keyPath = path.isEmpty ? name : path + "." + name
                    if !seen.insert(key).inserted { return keyPath }
                    skipSpace()
                    i += 1  // :
                    if let repeated = value(path: keyPath) { return repeated }
                }
            case 0x5B:  // [
                i += 1
                var index = 0
                while true {
                    skipSpace()
                    if i >= bytes.count || bytes[i] == 0x5D { i += 1; return nil }
                    if bytes[i] == 0x2C { i += 1; index += 1; continue }
                    if let repeated = value(path: "\(path)[\(index)]") { return repeated }
                }
            case 0x22:
                _ = string()
                return nil
            default:  // a number, true, false or null
                while i < bytes.count, ![0x2C, 0x7D, 0x5D, 0x20, 0x09, 0x0A, 0x0D].contains(bytes[i]) { i += 1 }
                return nil
            }
        }
    }
}
