import ChimeraIO
import ChimeraTensor
import ChimeraTokenizers
import Foundation

public struct GenerationOptions: Sendable {
    public var maxTokens: Int
    /// 0 means greedy (argmax).
    public var temperature: Float
    public var topK: Int?
    public var topP: Float?
    /// transformers' repetition_penalty: before choosing, the logit of every token already in the
    /// prompt or the answer is divided by it (multiplied when negative); nil or 1: none.
    public var repetitionPenalty: Float?
    public var seed: UInt64
    /// Strings that end the answer (a chat template's stop strings): a special token of the
    /// tokenizer stops on its id; any other text stops once the answer holds it, and is cut off.
    public var stop: [String]
    /// The KV cache's precision (float16 halves its memory; see KVPrecision).
    public var kvCache: KVPrecision
    /// `maxTokens` is a default, not asked for: where the prompt leaves less room in the context,
    /// the answer is bounded by that room (stop reason "context_length") instead of refused.
    public var fitsAnswerToContext = false
    /// Whether the prompt is tokenized with the tokenizer's special tokens (BOS): not when a Jinja
    /// chat template wrote them (`ChatTemplate.tokenizerAddsSpecialTokens`).
    public var addSpecialTokens = true
    public init(maxTokens: Int = 64, temperature: Float = 0, topK: Int? = nil, topP: Float? = nil, repetitionPenalty: Float? = nil,
                seed: UInt64 = 0, stop: [String] = [], kvCache: KVPrecision = .f32) {
        self.maxTokens = maxTokens; self.temperature = temperature; self.topK = topK == 0 ? nil : topK; self.topP = topP
        self.repetitionPenalty = repetitionPenalty; self.seed = seed; self.stop = stop; self.kvCache = kvCache
    }

    /// Throws PromptError.badOption, naming the flag, for a setting outside `GenerationRanges`.
    public func validate() throws {
        func check<Value>(_ value: Value?, _ range: (Value) -> String?, _ flag: String) throws {
            if let value, let expected = range(value) { throw PromptError.badOption("\(flag) must be \(expected), found \(value)") }
        }
        try check(maxTokens, GenerationRanges.maxTokens, "--max-tokens")
        try check(temperature, GenerationRanges.temperature, "--temperature")
        try check(topK, GenerationRanges.topK, "--top-k")
        try check(topP, GenerationRanges.topP, "--top-p")
        try check(repetitionPenalty, GenerationRanges.repetitionPenalty, "--repetition-penalty")
    }

    /// How tokens are chosen, for reports: "greedy", or the temperature and the cuts that apply.
    public var samplingDescription: String {
        let penalty = repetitionPenalty.flatMap { $0 == 1 ? nil : ", repetition penalty \($0)" } ?? ""
        guard temperature > 0 else { return "greedy" + penalty }
        return (["temperature \(temperature)"] + [topK.map { "top-k \($0)" }, topP.map { "top-p \($0)" }].compactMap { $0 })
            .joined(separator: ", ") + penalty + ", seed \(seed)"
    }
}

/// The valid values of each generation setting, shared by the command-line flags
/// (`GenerationOptions.validate`) and manifests' defaults (`GenerationDefaults`), each of which names
/// the setting its own way: nil when `value` is valid, else what was expected.
public enum GenerationRanges {
    public static func maxTokens(_ value: Int) -> String? { value >= 0 ? nil : ">= 0" }
    /// Finite: an infinite temperature would flatten every distribution to uniform, which no
    /// checkpoint means (transformers' warper takes it, producing noise).
    public static func temperature(_ value: Float) -> String? { value >= 0 && value.isFinite ? nil : ">= 0 and finite" }
    /// 0 keeps every token (transformers' top_k = 0).
    public static func topK(_ value: Int) -> String? { value >= 0 ? nil : ">= 0 (0 keeps every token)" }
    public static func topP(_ value: Float) -> String? { value > 0 && value <= 1 ? nil : "in (0, 1]" }
    public static func repetitionPenalty(_ value: Float) -> String? { value > 0 && value.isFinite ? nil : "positive and finite" }
}

public struct GenerationTimings: Codable, Sendable {
    public var encodeSeconds: Double
    public var prefillSeconds: Double
    public var prefillTokensPerSecond: Double
    public var decodeSeconds: Double
    public var decodeTokensPerSecond: Double
    enum CodingKeys: String, CodingKey {
        case encodeSeconds = "encode_s", prefillSeconds = "prefill_s", prefillTokensPerSecond = "prefill_tokens_per_s"
        case decodeSeconds = "decode_s", decodeTokensPerSecond = "decode_tokens_per_s"
    }
}

public struct GenerationResult: Codable, Sendable {
    public var tokens: [Int]
    public var text: String
    public var promptTokens: Int
    /// Of `promptTokens`, how many a `GenerationSession`'s cache already held (not prefilled again).
    public var cachedPromptTokens: Int = 0
    public var stopReason: String
    public var timings: GenerationTimings
    enum CodingKeys: String, CodingKey {
        case tokens, text, timings
        case promptTokens = "prompt_tokens", stopReason = "stop_reason", cachedPromptTokens = "cached_prompt_tokens"
    }
}

/// What one conversation keeps from one `generate` to the next, passed in explicitly so that a
/// forward pass stays a function of what it is given: its inputs' encoded features (each image is
/// encoded once), and a KV cache with a fingerprint of every position it holds, so that the next
/// prompt's positions that match from the start are not prefilled again.
public final class GenerationSession: @unchecked Sendable {
    public let features = EncodedFeatures()
    var cache: KVCache?
    var rows: [UInt64] = []  // one per cached position: a hash of its embedding row
    public init() {}

    /// A 64-bit FNV-1a hash of each row's float bits.
    static func fingerprints(_ embeddings: Tensor) -> [UInt64] {
        (0..<embeddings.rows).map { fingerprint(embeddings.data + $0 * embeddings.columns, count: embeddings.columns) }
    }

    static func fingerprint(_ row: UnsafePointer<Float>, count: Int) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for i in 0..<count { hash = (hash ^ UInt64(row[i].bitPattern)) &* 0x100_0000_01b3 }
        return hash
    }
}

/// What went wrong while decoding, once the prompt was accepted.
public enum GenerationError: LocalizedError {
    case nonFiniteLogits(model: String, step: Int)

    public var errorDescription: String? {
        switch self {
        case let .nonFiniteLogits(model, step):
            return "language model '\(model)' gave non-finite logits (NaN or infinity) for generated token \(step + 1): its weights or"
                + " activations hold a NaN or overflow (a damaged checkpoint, or float16 weights out of range); nothing was sampled from them"
        }
    }
}

/// Throws PromptError.unknownPlaceholder for an input given for a placeholder not among
/// `placeholders`, PromptError.unreadableInput for an input file that is not there, not readable,
/// or not a regular file (a FIFO would wait for a writer forever), and, given the `prompt`,
/// PromptError.inputCountMismatch unless it holds each placeholder as often as inputs are given for
/// it. The CLI checks before a model loads (which can take a while) what would otherwise be refused
/// only after it.
public func checkInputs(_ files: [String: [URL]], placeholders: [String], prompt: String? = nil) throws {
    if let prompt { _ = try checkedPieces(prompt, files: files, placeholders: placeholders) } else { try checkInputFiles(files, placeholders: placeholders) }
}

/// The prompt's pieces (`promptPieces`), once its inputs pass `checkInputs`.
func checkedPieces(_ prompt: String, files: [String: [URL]], placeholders: [String]) throws -> [(text: String, placeholder: String?)] {
    try checkInputFiles(files, placeholders: placeholders)
    let pieces = promptPieces(prompt, placeholders: placeholders)
    try checkInputCounts(pieces, files: files, placeholders: placeholders)
    return pieces
}

/// The prompt cut into text pieces (placeholder nil) and placeholder pieces, each placeholder of
/// `placeholders` looked for in turn in the text pieces the ones before it left, the longest first
/// (so that "<img>" does not take the start of an "<img>>").
public func promptPieces(_ prompt: String, placeholders: [String]) -> [(text: String, placeholder: String?)] {
    var pieces: [(text: String, placeholder: String?)] = [(prompt, nil)]
    for placeholder in placeholders.sorted(by: { $0.count > $1.count }) {
        pieces = pieces.flatMap { piece -> [(text: String, placeholder: String?)] in
            guard piece.placeholder == nil else { return [piece] }
            var out: [(text: String, placeholder: String?)] = []
            for (i, part) in piece.text.components(separatedBy: placeholder).enumerated() {
                if i > 0 { out.append((placeholder, placeholder)) }
                out.append((part, nil))
            }
            return out
        }
    }
    return pieces
}

func checkInputCounts(_ pieces: [(text: String, placeholder: String?)], files: [String: [URL]], placeholders: [String]) throws {
    for placeholder in placeholders {
        let count = pieces.filter { $0.placeholder == placeholder }.count, given = files[placeholder]?.count ?? 0
        guard count == given else { throw PromptError.inputCountMismatch(placeholder: placeholder, inPrompt: count, given: given) }
    }
}

func checkInputFiles(_ files: [String: [URL]], placeholders: [String]) throws {
    for (placeholder, urls) in files.sorted(by: { $0.key < $1.key }) {
        guard placeholders.contains(placeholder) else { throw PromptError.unknownPlaceholder(name: placeholder, known: placeholders) }
        for url in urls {
            if let reason = notARegularFile(url.path) ?? (FileManager.default.isReadableFile(atPath: url.path) ? nil : "no such file or not readable") {
                throw PromptError.unreadableInput(placeholder: placeholder, file: url.path, reason: reason)
            }
        }
    }
}

public enum PromptError: LocalizedError {
    case inputCountMismatch(placeholder: String, inPrompt: Int, given: Int)
    case unknownPlaceholder(name: String, known: [String])
    case tooLong(tokens: Int, maxTokens: Int, context: Int)
    /// Far over the context: tokenizing stopped at `moreThan` tokens.
    case farTooLong(moreThan: Int, context: Int)
    case emptyPrompt
    case extraPlaceholderTokens(placeholder: String, id: Int, placeholders: Int)
    case badOption(String)
    case unreadableInput(placeholder: String, file: String, reason: String)

    public var errorDescription: String? {
        switch self {
        case let .inputCountMismatch(placeholder, inPrompt, given):
            return "the prompt holds \(inPrompt) \(placeholder) placeholder\(inPrompt == 1 ? "" : "s") but \(given) input\(given == 1 ? " was" : "s were") given"
                + (inPrompt == 0 && given > 0 ? " (put \(placeholder) in the prompt where the input belongs)" : "")
        case let .unknownPlaceholder(name, known):
            if known.isEmpty { return "this assembly takes no inputs (text only), but one was given for '\(name)'" }
            return "this assembly has no input '\(name)' (its placeholders: \(known.joined(separator: ", ")))"
        case let .tooLong(tokens, maxTokens, context):
            // "at most 0 new tokens fit" would send the user to --max-tokens, which cannot help.
            if tokens > context { return "the prompt is \(tokens) tokens, longer than the context length of \(context): shorten the prompt" }
            if tokens == context {
                return "the prompt is \(tokens) tokens, the whole context length of \(context): no new token fits; shorten the prompt"
            }
            return "the prompt is \(tokens) tokens; with \(maxTokens) new tokens it needs more positions than the context length of \(context)"
                + " (at most \(context - tokens) new tokens fit)"
        case let .farTooLong(moreThan, context):
            return "the prompt is more than \(moreThan) tokens, longer than the context length of \(context): shorten the prompt"
        case .emptyPrompt:
            return "the prompt is empty: it tokenizes to no tokens (and the tokenizer adds no BOS)"
        case let .extraPlaceholderTokens(placeholder, id, placeholders):
            return "the tokenized prompt holds more \(placeholder) tokens (id \(id)) than its \(placeholders) placeholder\(placeholders == 1 ? "" : "s"):"
                + " the tokenizer gives other text, or a special token it adds, the placeholder's id"
        case let .badOption(message): return message
        case let .unreadableInput(placeholder, file, reason): return "cannot read the input for \(placeholder), '\(file)': \(reason)"
        }
    }
}

/// A prompt with its inputs turned into one embedding sequence.
public struct PreparedPrompt {
    public let tokens: [Int]            // placeholder positions hold the placeholder's token id (or -1)
    public let embeddings: Tensor       // [tokens, hidden]
    public let encodeSeconds: Double
    /// PromptLayout.runsAsTokenIDs: false when the repetition penalty counts only the answer.
    public let runsAsTokenIDs: Bool
}

/// Features already encoded, by placeholder and file, for a caller that runs one model on the same
/// inputs again (a `GenerationSession` holds one for a conversation's turns).
public final class EncodedFeatures: @unchecked Sendable {
    var features: [String: Tensor] = [:]
    public init() {}
}

/// How a prompt becomes the language model's sequence: runs of text tokens, and where each input's
/// feature rows go. When every placeholder is a token of the vocabulary (LLaVA), the whole prompt is
/// tokenized at once and each placeholder token stands for its input's rows; otherwise (TinyLLaVA's
/// textual <image>) the text between placeholders is tokenized apart, BOS only on the first piece.
public struct PromptLayout: Sendable {
    public enum Segment: Sendable {
        case text([Int])
        /// The `ordinal`-th input of the prompt (in prompt order): its placeholder and rows.
        case input(ordinal: Int, placeholder: String, rows: Int)
    }
    /// One per position: text ids, and at an input's rows its placeholder's id (or -1 when the
    /// placeholder is no token).
    public let tokens: [Int]
    public let segments: [Segment]
    /// The language model's context length the prompt was checked against.
    public let context: Int
    /// Whether the reference runs this prompt as token ids (LLaVA, a language model alone) rather
    /// than as embeddings (TinyLLaVA's textual placeholders: `generate(inputs_embeds=...)`, whose
    /// token history starts empty) — what transformers' repetition penalty then counts.
    public let runsAsTokenIDs: Bool

    /// `pieces` as `promptPieces` cut the prompt; `rows[i]` the feature rows of its i-th input.
    /// A prompt longer than `context` is refused (`PromptError.tooLong`, or `.farTooLong` once
    /// tokenizing stops past four contexts' worth).
    public init(_ prompt: String, pieces: [(text: String, placeholder: String?)], placeholders: [String], rows: [Int],
                tokenizer: Tokenizer, context: Int, addSpecialTokens: Bool = true) throws {
        // Counted exactly up to four contexts' worth, so that the error says how much to cut;
        // beyond that tokenizing stops (a 10 MB prompt took 36 s and 650 MB to be refused).
        let countedUpTo = 4 * context
        func tokenize(_ text: String, first: Bool, after count: Int) throws -> [Int] {
            do { return try tokenizer.encode(text, addSpecialTokens: first && addSpecialTokens, limit: countedUpTo - count) } catch {
                // (A `catch .moreTokensThan` pattern here crashes the Swift 6.3 compiler.)
                if case .moreTokensThan = error { throw PromptError.farTooLong(moreThan: countedUpTo, context: context) }
                throw error
            }
        }
        var tokens: [Int] = []
        var segments: [Segment] = []
        var ordinal = 0
        let placeholderIDs = placeholders.map { tokenizer.tokenID($0) }
        runsAsTokenIDs = placeholderIDs.allSatisfy { $0 != nil }
        if runsAsTokenIDs {
            var textRun: [Int] = []
            func flushText() {
                if !textRun.isEmpty { segments.append(.text(textRun)); textRun = [] }
            }
            for id in try tokenize(prompt, first: true, after: 0) {
                guard let which = placeholderIDs.firstIndex(of: id) else { textRun.append(id); tokens.append(id); continue }
                guard ordinal < rows.count else {
                    throw PromptError.extraPlaceholderTokens(placeholder: placeholders[which], id: id, placeholders: rows.count)
                }
                flushText()
                segments.append(.input(ordinal: ordinal, placeholder: placeholders[which], rows: rows[ordinal]))
                tokens += Array(repeating: id, count: rows[ordinal])
                ordinal += 1
            }
            flushText()
        } else {
            var first = true
            for piece in pieces {
                if let placeholder = piece.placeholder {
                    segments.append(.input(ordinal: ordinal, placeholder: placeholder, rows: rows[ordinal]))
                    tokens += Array(repeating: -1, count: rows[ordinal])
                    ordinal += 1
                } else {
                    let ids = try tokenize(piece.text, first: first, after: tokens.count)
                    first = false
                    if !ids.isEmpty { segments.append(.text(ids)); tokens += ids }
                }
            }
        }
        guard ordinal == rows.count else {
            throw PromptError.badOption("the tokenizer split a placeholder token; \(rows.count - ordinal) input(s) were not placed")
        }
        guard !tokens.isEmpty else { throw PromptError.emptyPrompt }
        guard tokens.count <= context else { throw PromptError.tooLong(tokens: tokens.count, maxTokens: 0, context: context) }
        self.tokens = tokens
        self.segments = segments
        self.context = context
    }
}

extension PromptLayout {
    /// The layout `generate` would run for `prompt`, from the manifests alone: the language model's
    /// context (built over shapes, no weights) and each input's feature rows as its encoder and
    /// connector declare them; `tokenizer` the language model's (`Assembler.tokenizer(of:)`).
    /// Nothing is loaded or encoded.
    public init(_ prompt: String, assembly: AssemblyManifest, catalog: Catalog, families: FamilyRegistry, tokenizer: Tokenizer,
                inputs files: [String: [URL]], addSpecialTokens: Bool = true) throws {
        let placeholders = assembly.inputs.map(\.placeholder)
        let pieces = try checkedPieces(prompt, files: files, placeholders: placeholders)
        let lmManifest = try catalog.component(assembly.languageModel, kind: .languageModel)
        guard let lm = try families.build(lmManifest, substitute: .shapesOnly) as? any LanguageModel else {
            throw AssemblyError.incompatible(assembly: assembly.id, problems: ["'\(lmManifest.id)' did not build a language model"])
        }
        let checker = CompatibilityChecker(catalog: catalog, families: families)
        let rows = try pieces.compactMap(\.placeholder).map { placeholder -> Int in
            let binding = assembly.inputs.first { $0.placeholder == placeholder }!
            guard let rows = try checker.inputRows(binding) else {
                throw AssemblyError.incompatible(assembly: assembly.id, problems: checker.problems(assembly: assembly, filesOnDisk: false))
            }
            return rows
        }
        try self.init(prompt, pieces: pieces, placeholders: placeholders, rows: rows,
                      tokenizer: tokenizer, context: lm.contextLength, addSpecialTokens: addSpecialTokens)
    }
}

extension AssembledModel {
    /// Tokenizes the prompt and splices each input's features where its placeholder stands.
    /// `inputs` maps a placeholder ("<image>") to its files, used in prompt order; features found in
    /// `cache` are not encoded again, and new ones are kept there. A prompt longer than the language
    /// model's context is refused before its text is embedded (`PromptError.tooLong`, or
    /// `.farTooLong` once tokenizing stops past four contexts' worth).
    public func prepare(prompt: String, inputs files: [String: [URL]], cache: EncodedFeatures? = nil, addSpecialTokens: Bool = true) throws -> PreparedPrompt {
        let placeholders = inputs.map(\.binding.placeholder)
        let named = try checkedPieces(prompt, files: files, placeholders: placeholders)
        let pieces = named.map { piece in
            (text: piece.text, input: piece.placeholder.flatMap { name in inputs.first { $0.binding.placeholder == name } })
        }

        // Features per placeholder occurrence, in prompt order.
        let started = Date()
        var used: [String: Int] = [:]
        var features: [Tensor] = []
        for piece in pieces {
            guard let input = piece.input else { continue }
            let name = input.binding.placeholder
            let file = files[name]![used[name, default: 0]]
            used[name, default: 0] += 1
            let key = name + "\u{0}" + file.path
            if let cached = cache?.features[key] { features.append(cached); continue }
            let encoded = try encode(file, with: input)
            cache?.features[key] = encoded
            features.append(encoded)
        }
        let encodeSeconds = Date().timeIntervalSince(started)

        // Runs of text are embedded only once the whole prompt is known to fit the context (a
        // megabyte of text would otherwise be a gigabyte of embeddings before the length error).
        let layout = try PromptLayout(prompt, pieces: named, placeholders: placeholders, rows: features.map(\.rows),
                                      tokenizer: tokenizer, context: languageModel.contextLength, addSpecialTokens: addSpecialTokens)
        let rows = try layout.segments.map { segment -> Tensor in
            switch segment {
            case let .text(ids): return try languageModel.embed(ids)
            case let .input(ordinal, _, _): return features[ordinal]
            }
        }
        return PreparedPrompt(tokens: layout.tokens, embeddings: concatRows(rows), encodeSeconds: encodeSeconds,
                              runsAsTokenIDs: layout.runsAsTokenIDs)
    }

    /// Encoder hidden state → feature selection → connector, for one input file.
    public func encode(_ file: URL, with input: BoundInput) throws -> Tensor {
        let prepared = try input.encoder.prepareInput(contentsOf: file)
        var hidden = try input.encoder.hiddenState(prepared, layer: input.binding.featureLayer)
        if input.binding.select == .patch { hidden = hidden.rows(1..<hidden.rows) }
        return try input.connector.forward(hidden)
    }

    /// Runs the prompt and decodes until EOS or `maxTokens`, streaming text to `onText`. With a
    /// session (a conversation's turns), its encoded inputs and cached positions are reused and kept.
    public func generate(prompt: String, inputs files: [String: [URL]] = [:], options: GenerationOptions,
                         session: GenerationSession? = nil, onText: (String) -> Void = { _ in }) throws -> GenerationResult {
        try options.validate()
        let prepared = try prepare(prompt: prompt, inputs: files, cache: session?.features, addSpecialTokens: options.addSpecialTokens)
        let promptLength = prepared.embeddings.rows
        let context = languageModel.contextLength
        var options = options
        let boundedByContext = options.fitsAnswerToContext && promptLength < context && options.maxTokens > context - promptLength
        if boundedByContext { options.maxTokens = context - promptLength }
        guard options.maxTokens <= context - promptLength else {  // not a sum: --max-tokens may be near Int.max
            throw PromptError.tooLong(tokens: promptLength, maxTokens: options.maxTokens, context: context)
        }
        // A session's cache is kept while it has room and the same precision; the positions it holds
        // that the prompt repeats from the start stay (the last prompt position is always run: its logits).
        var cache: KVCache, cached = 0
        let rows = session.map { _ in GenerationSession.fingerprints(prepared.embeddings) } ?? []
        if let session, let kept = session.cache, kept.capacity >= promptLength + options.maxTokens,
           kept.layers.first?.precision ?? options.kvCache == options.kvCache {
            cache = kept
            // (At most what the cache holds: a turn that failed may have left a row unfed.)
            while cached < min(session.rows.count, kept.length, promptLength - 1), session.rows[cached] == rows[cached] { cached += 1 }
        } else {
            // A session's cache is made with room for later turns too (up to the context length).
            let wanted = promptLength + options.maxTokens
            cache = languageModel.makeCache(capacity: session == nil ? wanted : min(context, max(2 * wanted, 1024)), precision: options.kvCache)
            session?.cache = cache
        }
        cache.truncate(to: cached)
        session?.rows = rows
        var sampler = Sampler(options: options)
        // The penalty counts the prompt where the reference's token history holds it (see runsAsTokenIDs).
        if prepared.runsAsTokenIDs { sampler.saw(prepared.tokens) }
        var detokenizer = StreamingDetokenizer(tokenizer: tokenizer)
        var generated: [Int] = []
        var stopReason = boundedByContext ? "context_length" : "max_tokens"
        // Special tokens ("</s>", "<|im_end|>") stop on their id; any other text once the answer holds it.
        func specialID(_ s: String) -> Int? { tokenizer.tokenID(s).flatMap { tokenizer.specialTokenIDs.contains($0) ? $0 : nil } }
        let stopIDs = Set(options.stop.compactMap(specialID))
        let textStops = options.stop.filter { specialID($0) == nil }
        var stopFilter = StopStringFilter(stops: textStops)

        let prefillStart = Date()
        var logits = try languageModel.forward(embeddings: cached == 0 ? prepared.embeddings : prepared.embeddings.rows(cached..<promptLength),
                                               cache: cache, lastOnly: true)
        let prefillSeconds = Date().timeIntervalSince(prefillStart)
        let decodeStart = Date()
        let nextEmbedding = Tensor(zeros: [1, languageModel.hiddenSize])
        generated.reserveCapacity(options.maxTokens)
        while generated.count < options.maxTokens {
            let next = sampler.sample(logits)
            // The sampler returns a NaN logit's index when there is one (a NaN in the hidden state
            // makes every logit NaN, one in a row of the head only its token's), and a NaN or
            // infinite chosen logit is never a real choice.
            guard logits.data[next].isFinite else {
                throw GenerationError.nonFiniteLogits(model: languageModel.id, step: generated.count)
            }
            if eosTokenIDs.contains(next) { stopReason = "eos"; break }
            if stopIDs.contains(next) { stopReason = "stop"; break }
            generated.append(next)
            onText(stopFilter.append(try detokenizer.append(next)))
            if stopFilter.stopped { stopReason = "stop"; break }
            if generated.count == options.maxTokens { break }
            try languageModel.embed(token: next, into: nextEmbedding)
            session?.rows.append(GenerationSession.fingerprint(nextEmbedding.data, count: nextEmbedding.columns))
            logits = try languageModel.forward(embeddings: nextEmbedding, cache: cache, lastOnly: true)
        }
        onText(stopFilter.append(try detokenizer.finish()) + stopFilter.finish())
        let decodeSeconds = Date().timeIntervalSince(decodeStart)
        let timings = GenerationTimings(
            encodeSeconds: prepared.encodeSeconds, prefillSeconds: prefillSeconds,
            prefillTokensPerSecond: Double(promptLength - cached) / max(prefillSeconds, 1e-9),
            decodeSeconds: decodeSeconds,
            decodeTokensPerSecond: generated.count > 1 ? Double(generated.count - 1) / max(decodeSeconds, 1e-9) : 0)
        return GenerationResult(tokens: generated, text: StopStringFilter.cut(try tokenizer.decode(generated, skipSpecialTokens: true), at: textStops),
                                promptTokens: promptLength, cachedPromptTokens: cached, stopReason: stopReason, timings: timings)
    }
}

/// Streams an answer while holding back a tail that may still become a stop string, so that no
/// part of a stop string is ever shown; `stopped` once the text holds one.
struct StopStringFilter {
    /// Each stop string's UTF-8 bytes, and its prefix function (the longest proper prefix of
    /// stop[..<i+1] that is also its suffix): a Knuth–Morris–Pratt matcher, so that each byte of
    /// the answer costs O(1) a stop string however long it is (re-searching the whole answer for
    /// every stop, each token, made a 100,000-byte stop string hang decoding).
    private let stops: [(bytes: [UInt8], fallback: [Int])]
    /// Per stop string, how many of its first bytes the answer now ends with.
    private var matched: [Int]
    private var bytes: [UInt8] = []
    private(set) var stopped = false
    /// Bytes of the answer already passed on. Counted in bytes, not Characters: a token that only
    /// adds a combining mark or a variation selector to the last character would not change the
    /// character count, and was never streamed.
    private var emitted = 0

    init(stops: [String]) {
        self.stops = stops.filter { !$0.isEmpty }.map { stop in
            let bytes = Array(stop.utf8)
            var fallback = [Int](repeating: 0, count: bytes.count), k = 0
            for i in bytes.indices.dropFirst() {
                while k > 0 && bytes[i] != bytes[k] { k = fallback[k - 1] }
                if bytes[i] == bytes[k] { k += 1 }
                fallback[i] = k
            }
            return (bytes, fallback)
        }
        matched = Array(repeating: 0, count: self.stops.count)
    }

    /// The text before the first stop string it holds (matched byte for byte).
    static func cut(_ text: String, at stops: [String]) -> String {
        var filter = StopStringFilter(stops: stops)
        let shown = filter.append(text)
        return filter.stopped ? shown : text
    }

    /// Takes the next piece of text; returns what may be shown now.
    mutating func append(_ piece: String) -> String {
        guard !stopped else { return "" }
        for byte in piece.utf8 {
            bytes.append(byte)
            for s in stops.indices {
                let stop = stops[s].bytes
                var k = matched[s]
                while k > 0 && byte != stop[k] { k = stops[s].fallback[k - 1] }
                if byte == stop[k] { k += 1 }
                if k == stop.count {  // a whole stop string, ending at this byte: the answer ends before it
                    stopped = true
                    return release(upTo: bytes.count - stop.count)
                }
                matched[s] = k
            }
        }
        // Held back: the longest tail that is the start of a stop string (it may yet complete one).
        return release(upTo: bytes.count - (matched.max() ?? 0))
    }

    /// What is still held back once the answer is complete.
    mutating func finish() -> String { stopped ? "" : release(upTo: bytes.count) }

    /// Bytes [emitted, end) as text: both ends fall between characters' bytes (pieces are whole
    /// scalars, and a stop string, valid UTF-8, starts on a scalar's first byte).
    private mutating func release(upTo end: Int) -> String {
        guard end > emitted else { return "" }
        defer { emitted = end }
        return String(decoding: bytes[emitted..<end], as: UTF8.self)
    }
}

/// Greedy or temperature / top-k / top-p sampling with a seeded generator, as transformers'
/// logits warpers order them: temperature, then top-k (every token whose probability is at least
/// the k-th largest's, ties included), then top-p (the fewest most probable tokens whose
/// probabilities reach p, the one that crosses p included; ties at that boundary are taken in id
/// order).
///
/// Nothing is sorted (sorting a 151,936-token vocabulary took 15 ms a token, about as long as
/// decoding it with Qwen2-0.5B), nor selected one token at a time: top-k's floor, weights, cuts and
/// the draw are vector passes over the vocabulary (ChimeraTensor's `topKFloor`, `samplingWeights`,
/// `largestCut`, `drawIndex`); after a top-k only the tokens it keeps get weights. The draw walks
/// the kept tokens in id order. Buffers are sized on the first token and reused, so sampling
/// allocates nothing per token.
public struct Sampler {
    let options: GenerationOptions
    var generator: SplitMix64
    private var weights: [Float] = []     // per token id: exp((logit − max) / temperature)
    private var scratch: [Float] = []     // the band largestCut selects in, top-k's buffer
    private var candidates: [Float] = []  // after top-k: the kept tokens' logits, then weights, in id order
    private var candidateIDs: [Int32] = []
    // With a repetition penalty: the token ids seen so far, once each (the prompt's and the answer's).
    private var seen: [Int32] = []
    private var isSeen: [Bool] = []

    public init(options: GenerationOptions) {
        self.options = options
        generator = SplitMix64(seed: options.seed)
    }

    /// Tokens the repetition penalty counts as seen (the prompt's; negative ids, inputs' positions,
    /// are skipped). What `sample` returns is counted by itself.
    public mutating func saw(_ tokens: [Int]) {
        for token in tokens { saw(token: token) }
    }

    private mutating func saw(token: Int) {
        guard let penalty = options.repetitionPenalty, penalty != 1, token >= 0 else { return }
        if token >= isSeen.count { isSeen += [Bool](repeating: false, count: token + 1 - isSeen.count) }
        if !isSeen[token] { isSeen[token] = true; seen.append(Int32(token)) }
    }

    /// Chooses the next token from the last row of `logits`. With a repetition penalty, that row's
    /// logits of seen tokens are penalized in place first (as transformers' processor does, before
    /// temperature, top-k and top-p, and for greedy decoding too).
    public mutating func sample(_ logits: Tensor) -> Int {
        let n = logits.columns
        let row = logits.data + (logits.rows - 1) * n
        if let penalty = options.repetitionPenalty, penalty != 1 {
            if isSeen.count < n {  // once: no allocation per token after the first
                isSeen += [Bool](repeating: false, count: n - isSeen.count)
                seen.reserveCapacity(n)
            }
            seen.withUnsafeBufferPointer { applyRepetitionPenalty(row, count: n, seen: $0, penalty: penalty) }
        }
        let chosen = choose(row, count: n)
        saw(token: chosen)
        return chosen
    }

    private mutating func choose(_ row: UnsafeMutablePointer<Float>, count n: Int) -> Int {
        if options.temperature == 0 { return argmax(row, count: n) }
        // A NaN logit is a broken model (transformers' multinomial draw refuses one too): its index
        // goes back, for generation to refuse, rather than a draw among the other tokens (top-k's
        // floor and the weights' tallies pass NaN over). Otherwise this largest logit is the
        // weights' shift (top-k keeps it among its candidates).
        let top = argmax(row, count: n), largest = row[top]
        if largest.isNaN { return top }
        if weights.count != n {
            weights = [Float](repeating: 0, count: n); candidates = weights
            candidateIDs = [Int32](repeating: 0, count: n)
        }
        // (top-k's buffer only when it cuts: a k of the vocabulary or more keeps every token)
        let scratchCount = max(n, options.topK.flatMap { $0 < n ? topKBufferCount($0) : nil } ?? 0)
        if scratch.count < scratchCount { scratch = [Float](repeating: 0, count: scratchCount) }
        let draw = Float(generator.unit())
        let options = options
        let drawn: Int? = weights.withUnsafeMutableBufferPointer { weights in
            scratch.withUnsafeMutableBufferPointer { scratch in
                candidates.withUnsafeMutableBufferPointer { candidates in
                    candidateIDs.withUnsafeMutableBufferPointer { ids in
                        let scratch = scratch.baseAddress!
                        var values = UnsafePointer(weights.baseAddress!), count = n, kept: UnsafePointer<Int32>?, total: Float
                        if let k = options.topK, k < n {
                            // Top-k on the logits (one pass), then weights for the few it keeps only.
                            let floor = topKFloor(row, count: n, k: k, buffer: scratch)
                            count = gather(row, count: n, from: floor, below: .infinity, into: candidates.baseAddress!, ids: ids.baseAddress!)
                            total = samplingWeights(candidates.baseAddress!, count: count, max: largest, temperature: options.temperature,
                                                    into: candidates.baseAddress!)
                            values = UnsafePointer(candidates.baseAddress!); kept = UnsafePointer(ids.baseAddress!)
                        } else {
                            total = samplingWeights(row, count: n, max: largest, temperature: options.temperature, into: weights.baseAddress!)
                        }
                        var cut = WeightCut.all
                        if let p = options.topP, p < 1 {  // (no weight exceeds 1: the largest logit's is exp(0))
                            cut = largestCut(values, count: count, largest: 1, total: total.isFinite ? total : nil, scratch: scratch,
                                             need: .sum(p * total))
                        }
                        return drawIndex(values, count: count, cut: cut, draw: draw).map { i in kept.map { Int($0[i]) } ?? i }
                    }
                }
            }
        }
        return drawn ?? argmax(row, count: n)  // weights that sum to zero or NaN: the most likely token
    }
}
