import Foundation

/// A Hugging Face `tokenizer.json` tokenizer (BPE models: byte-level like GPT-2/Qwen2,
/// or SentencePiece-style with byte fallback like Llama/Gemma).
///
/// Encoding follows the Rust pipeline: split on added tokens -> normalizer ->
/// split on normalized added tokens -> pre-tokenizer -> BPE -> post-processor.
/// Immutable after init except for the BPE word cache, which is locked, hence
/// `@unchecked Sendable`.
public final class Tokenizer: @unchecked Sendable {
    let name: String
    let normalizer: (any Normalizer)?
    let preTokenizer: (any PreTokenizer)?
    let model: BPEModel
    let decoder: (any Decoder)?
    /// Whether the decoders hold a ByteFallback, which joins runs of <0xNN> tokens.
    private let decoderJoinsByteRuns: Bool
    let postProcessor: (any PostProcessor)?
    let addedTokens: [AddedToken]
    private let addedByID: [Int: AddedToken]
    private let addedByContent: [ExactString: AddedToken]
    private let specialContents: Set<ExactString>
    private let specialIDs: Set<Int>
    /// What decode sees for an added token. Like Hugging Face, a normalized added
    /// token decodes as its normalized form (legacy Llama: "<pad>" -> "▁<pad>", so the
    /// decoder turns the "▁" back into the space the normalizer had added).
    private let addedDecodeText: [Int: String]
    /// Added tokens matched in the raw text / in the normalized text.
    private let rawSplitter: AddedTokenSplitter
    private let normalizedSplitter: AddedTokenSplitter

    public convenience init(url: URL) throws {
        // Foundation declines a FIFO or a folder with "Permission denied" or the like: say what it
        // is (as ChimeraIO's notARegularFile does; this module depends on nothing, so it asks Foundation).
        if let type = try? FileManager.default.attributesOfItem(atPath: url.path)[.type] as? FileAttributeType, type != .typeRegular {
            throw TokenizerError.fileNotReadable(
                file: url.path, reason: type == .typeDirectory ? "it is a folder, not a file" : "it is not a regular file (a FIFO, socket or device)")
        }
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            let missing = !FileManager.default.fileExists(atPath: url.path)
            throw TokenizerError.fileNotReadable(file: url.path, reason: missing ? "no such file" : error.localizedDescription)
        }
        try self.init(data: data, name: url.path, configuredSpecialTokens: try Self.configuredSpecialTokens(besides: url).all)
    }

    /// The named special tokens (bos_token, eos_token, unk_token, sep_token, pad_token, cls_token,
    /// mask_token) of the tokenizer_config.json beside the tokenizer file `url`, as transformers
    /// passes them to a chat template.
    public static func namedSpecialTokens(besides url: URL) throws -> [String: String] { try configuredSpecialTokens(besides: url).named }
    static let namedSpecialTokenFields: Set<String> = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"]

    /// The tokens a `tokenizer_config.json` beside `tokenizerFile` names as special (every string
    /// `*_token` field, `additional_special_tokens`, `extra_special_tokens`): transformers skips them
    /// when decoding with `skip_special_tokens`, even where tokenizer.json marks them not special
    /// (a `pad_token`, an `image_token`). None without the file. `named`: the standard named ones.
    static func configuredSpecialTokens(besides tokenizerFile: URL) throws(TokenizerError) -> (all: [String], named: [String: String]) {
        let url = tokenizerFile.deletingLastPathComponent().appendingPathComponent("tokenizer_config.json")
        guard let data = FileManager.default.contents(atPath: url.path) else { return ([], [:]) }
        let root: ConfigNode
        do { root = ConfigNode(value: try JSONParser.parse(data), path: "", file: url.path) } catch {
            throw TokenizerError.malformedJSON(file: url.path, reason: error.message)
        }
        // A token as a string, or as a saved AddedToken object {"content": ...}.
        func content(_ value: JSONValue) -> String? {
            if case .string(let text) = value { return text }
            if case .object(let members) = value, case .string(let text)? = members.first(where: { $0.key == "content" })?.value { return text }
            return nil
        }
        guard case .object(let members) = root.value else { throw root.invalid("a JSON object at the top level") }
        var tokens: [String] = []
        var named: [String: String] = [:]
        for (key, value) in members {
            if key.hasSuffix("_token"), let token = content(value) { tokens.append(token) }
            if namedSpecialTokenFields.contains(key), let token = content(value) { named[key] = token }
            if key == "additional_special_tokens" || key == "extra_special_tokens" {
                switch value {
                case .array(let items): tokens += items.compactMap(content)
                case .object(let entries): tokens += entries.compactMap { content($0.value) }
                default: break
                }
            }
        }
        return (tokens, named)
    }

    /// `name` is used in error messages (typically the file path); `configuredSpecialTokens` are
    /// added tokens to skip as special when decoding, beside those tokenizer.json marks special.
    public init(data: Data, name: String, configuredSpecialTokens: [String] = []) throws {
        self.name = name
        let root: ConfigNode
        do {
            root = ConfigNode(value: try JSONParser.parse(data), path: "", file: name)
        } catch {
            throw TokenizerError.malformedJSON(file: name, reason: error.message)
        }
        guard case .object = root.value else { throw root.invalid("a JSON object at the top level") }

        model = try Models.make(root.required("model"))
        normalizer = try root["normalizer"].map { node throws(TokenizerError) in try Normalizers.make(node) }
        preTokenizer = try root["pre_tokenizer"].map { node throws(TokenizerError) in try PreTokenizers.make(node) }
        decoder = try root["decoder"].map { node throws(TokenizerError) in try Decoders.make(node) }
        decoderJoinsByteRuns = decoder is ByteFallbackDecoder || (decoder as? SequenceDecoder)?.steps.contains { $0 is ByteFallbackDecoder } == true
        postProcessor = try root["post_processor"].map { node throws(TokenizerError) in try PostProcessors.make(node) }
        addedTokens = try (root["added_tokens"]?.asArray() ?? []).map { node throws(TokenizerError) in try AddedToken(node: node) }

        addedByID = Dictionary(addedTokens.map { ($0.id, $0) }, uniquingKeysWith: { _, last in last })
        addedByContent = Dictionary(addedTokens.map { (ExactString($0.content), $0) }, uniquingKeysWith: { _, last in last })
        let configured = Set(configuredSpecialTokens.map(ExactString.init))
        let special = addedTokens.filter { $0.special || configured.contains(ExactString($0.content)) }
        specialContents = Set(special.map { ExactString($0.content) })
        specialIDs = Set(special.map(\.id))
        // Normalized tokens are searched for (and decoded) by their normalized form.
        let normalizer = self.normalizer
        let searchTexts = try addedTokens.map { token throws(TokenizerError) in
            try token.normalized ? normalizer?.normalize(token.content) ?? token.content : token.content
        }
        addedDecodeText = Dictionary(zip(addedTokens.map(\.id), searchTexts), uniquingKeysWith: { _, last in last })
        rawSplitter = AddedTokenSplitter(zip(searchTexts, addedTokens).filter { !$1.normalized }.map { ($0, $1) })
        normalizedSplitter = AddedTokenSplitter(zip(searchTexts, addedTokens).filter { $1.normalized }.map { ($0, $1) })
    }

    // MARK: Encoding

    /// The ids of `text`. Throws only when one of the tokenizer's patterns takes too long over
    /// it (SplitPattern.timeLimit). With a `limit`, it throws `.moreTokensThan(limit)` as soon as
    /// the text is known to give more ids than that — before a word's merges when its length alone
    /// says so (`BPEModel.fewestIDs`) — so that a caller who can use no more than `limit` ids does
    /// not wait for megabytes to be tokenized.
    public func encode(_ text: String, addSpecialTokens: Bool = true, limit: Int? = nil) throws(TokenizerError) -> [Int] {
        var ids: [Int] = []
        for part in rawSplitter.split(text) {
            guard case .text(let raw, let rawStart) = part else {
                if case .token(let id) = part { ids.append(id) }
                continue
            }
            let normalized = try normalizer?.normalize(raw) ?? raw
            for inner in normalizedSplitter.split(normalized) {
                switch inner {
                case .token(let id):
                    ids.append(id)
                case .text(let piece, let start):
                    let word = PreToken(text: piece, atStart: rawStart == 0 && start == 0)
                    for pre in try preTokenizer?([word]) ?? [word] {
                        if let limit, ids.count + model.fewestIDs(pre.text) > limit { throw .moreTokensThan(limit: limit) }
                        ids.append(contentsOf: model.tokenize(pre.text))
                        if let limit, ids.count > limit { throw .moreTokensThan(limit: limit) }
                    }
                }
            }
        }
        guard addSpecialTokens, let postProcessor else { return ids }
        let processed = postProcessor.process(ids)
        if let limit, processed.count > limit { throw .moreTokensThan(limit: limit) }
        return processed
    }

    // MARK: Decoding

    /// The text of `ids`. Throws only when a decoder's pattern takes too long (as `encode`).
    public func decode(_ ids: [Int], skipSpecialTokens: Bool = false) throws(TokenizerError) -> String {
        try decode(ids[...], skipSpecialTokens: skipSpecialTokens)
    }

    func decode(_ ids: ArraySlice<Int>, skipSpecialTokens: Bool) throws(TokenizerError) -> String {
        let tokens = ids.compactMap { decoderInput($0, skipSpecialTokens: skipSpecialTokens) }
        guard let decoder else { return tokens.joined(separator: " ") }
        return try decoder.decodeChain(tokens).joined()
    }

    /// What the decoders get for `id`: nil when a decode drops it (a skipped special token, an
    /// unknown id), so that leaving it out of a sequence changes nothing.
    func decoderInput(_ id: Int, skipSpecialTokens: Bool) -> String? {
        if skipSpecialTokens, specialIDs.contains(id) { return nil }
        if let added = addedDecodeText[id] { return added }
        guard let text = token(id) else { return nil }  // unknown ids are dropped
        if skipSpecialTokens, specialContents.contains(ExactString(text)) { return nil }
        return text
    }

    /// Whether `id` is a <0xNN> token the decoder joins with its neighbours (ByteFallback): a run's
    /// text is known only once it ends, since one invalid byte turns the whole run into U+FFFDs.
    func isFallbackByte(_ id: Int) -> Bool {
        decoderJoinsByteRuns && decoderInput(id, skipSpecialTokens: false).flatMap(ByteFallbackDecoder.byte(of:)) != nil
    }


    // MARK: Vocabulary

    public func tokenID(_ token: String) -> Int? {
        addedByContent[ExactString(token)]?.id ?? model.vocab[ExactString(token)]
    }

    public func token(_ id: Int) -> String? {
        if let added = addedByID[id] { return added.content }
        return model.idToToken.indices.contains(id) ? model.idToToken[id] : nil
    }

    /// Max id + 1 over the vocab and the added tokens.
    public var vocabularySize: Int {
        max(model.idToToken.count, (addedByID.keys.max() ?? -1) + 1)
    }

    public var specialTokenIDs: Set<Int> { specialIDs }

    /// The BOS id added by the TemplateProcessing post-processor, if it adds one.
    public var bosTokenID: Int? { postProcessor?.bosTokenID }
}
