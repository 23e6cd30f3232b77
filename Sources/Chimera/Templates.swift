import ChimeraIO
import ChimeraJinja
import Foundation

// Chat templates as data (manifest kind "chimera.template/v1", files under manifests/templates/),
// in one of two forms.
// Slots restate TinyLLaVA_Factory's Template (tinyllava/data/template/base.py): a system slot
// written once, a user slot and an assistant slot per turn, the image placeholder moved to the front
// of the user turn that holds it, and the stop string that ends an answer. TinyLLaVA derives the
// open answer's prefix ("ASSISTANT:") from the assistant slot; here it is spelled out as
// `generation_prompt`, so that no template depends on where a colon happens to stand.
// A Jinja file (`jinja_file`) is a Hugging Face checkpoint's own chat template, rendered as
// transformers' apply_chat_template renders it (ChimeraJinja): it writes the whole prompt, special
// tokens included, so the prompt is then tokenized without the tokenizer's own (BOS).

/// One turn of a conversation: `role` is "system" (first turn only), "user" or "assistant".
public struct ChatTurn: Codable, Sendable, Equatable {
    public var role: String
    public var content: String
    public init(role: String, content: String) { self.role = role; self.content = content }
    enum CodingKeys: String, CodingKey, CaseIterable { case role, content }
    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        role = try c.decode(String.self, forKey: .role)
        content = try c.decode(String.self, forKey: .content)
    }

    /// The conversation without its oldest exchange (the first user turn after the system turns
    /// and the turns up to the next user turn), to make room in the context; nil when the last user
    /// turn is the only one left. Inputs placed in front of the first user turn then go in front of
    /// the new first one.
    public static func droppingOldestExchange(_ turns: [ChatTurn]) -> (turns: [ChatTurn], dropped: Int)? {
        guard let first = turns.firstIndex(where: { $0.role != "system" }),
              let next = turns[(first + 1)...].firstIndex(where: { $0.role == "user" }) else { return nil }
        return (Array(turns[..<first] + turns[next...]), next - first)
    }

    /// A model's answer as it joins the conversation: its text with every input placeholder taken
    /// out (a model can spell one, and in the conversation's next prompt it would stand for an
    /// input no one gave), and whether any was.
    public static func answer(_ text: String, placeholders: [String]) -> (turn: ChatTurn, removedPlaceholders: Bool) {
        var content = text
        for placeholder in placeholders where !placeholder.isEmpty { content = content.replacingOccurrences(of: placeholder, with: "") }
        return (ChatTurn(role: "assistant", content: content), content != text)
    }

    /// Reads a conversation file: a JSON list of {role, content}.
    public static func conversation(contentsOf url: URL) throws -> [ChatTurn] {
        if let reason = notARegularFile(url.path) { throw ChatTemplateError.unreadableConversation(file: url.path, reason: reason) }
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw ChatTemplateError.unreadableConversation(file: url.path, reason: "no such file or not readable")
        }
        do { return try JSONDecoder().decode([ChatTurn].self, from: data) } catch let error as DecodingError {
            throw ManifestError.invalid(file: url.path, detail: "expected a JSON list of {\"role\", \"content\"}: " + describe(error))
        }
    }
}

public enum ChatTemplateError: LocalizedError, Equatable {
    case badConversation(String)
    case unreadableConversation(file: String, reason: String)
    case dropsPlaceholder(template: String, placeholder: String, given: Int, kept: Int)
    /// A Jinja template failed: it refused the conversation (raise_exception), or rendering it did.
    case jinja(template: String, file: String, JinjaError)
    /// A Jinja chat template file that cannot be read or is not Jinja this renderer reads.
    case unreadableJinja(file: String, reason: String)
    public var errorDescription: String? {
        switch self {
        case let .unreadableJinja(file, reason): return "\(file): cannot read the chat template: \(reason)"
        case let .jinja(template, _, .raised(message)): return "chat template '\(template)' refuses the conversation: \(message)"
        case let .jinja(template, file, error): return "chat template '\(template)' (\(file)) failed: \(error.errorDescription ?? "\(error)")"
        case let .badConversation(reason): return "conversation: \(reason)"
        case let .dropsPlaceholder(template, placeholder, given, kept):
            return "chat template '\(template)' keeps \(kept) of the conversation's \(given) \(placeholder) placeholder\(given == 1 ? "" : "s")"
                + " (a slot without {{content}} drops the text it is given): the input would go unused"
        case let .unreadableConversation(file, reason): return "\(file): cannot read the conversation: \(reason)"
        }
    }
}

public struct ChatTemplate: Codable, Sendable, Equatable {
    public static let schemaVersion = "chimera.template/v1"
    public static let contentSlot = "{{content}}"

    /// How a user turn that holds the placeholder is rewritten (TinyLLaVA's format_image_token).
    public struct ImageRule: Codable, Sendable, Equatable {
        public var placeholder: String
        /// e.g. "<image>\n{{content}}": the placeholder goes first, on its own line.
        public var format: String
        enum CodingKeys: String, CodingKey, CaseIterable { case placeholder, format }
        public init(placeholder: String, format: String) { self.placeholder = placeholder; self.format = format }
        public init(from decoder: Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            placeholder = try c.decode(String.self, forKey: .placeholder)
            format = try c.decode(String.self, forKey: .format)
            if placeholder.isEmpty {
                throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath + [CodingKeys.placeholder], debugDescription: "must not be empty"))
            }
        }
    }

    public var schema: String
    public var id: String
    public var description: String?
    public var source: String?
    /// Default system text ("" writes nothing); a leading "system" turn replaces it.
    public var system: String
    /// How the system text is written, e.g. "{{content}} ".
    public var systemFormat: String
    public var user: String
    public var assistant: String
    /// What opens the answer the model is to write, e.g. "ASSISTANT:".
    public var generationPrompt: String
    public var image: ImageRule?
    /// Text that ends an answer; generation stops there (as TinyLLaVA's KeywordsStoppingCriteria).
    public var stop: [String]
    /// The Jinja form: a Hugging Face chat template file (relative to the manifest) that writes the
    /// whole prompt; the slots above are then empty. Read and parsed by `loadJinja()`.
    public var jinjaFile: String?
    public private(set) var jinja: JinjaTemplate?
    /// Jinja templates of multimodal processors (llava-hf's) read a turn's content as a list of
    /// parts: {"type": "text", "text": …} and, where an input's placeholder stands, {"type": its
    /// part type}. Maps placeholders ("<image>") to part types ("image"); nil gives content as text.
    public var contentParts: [String: String]?
    /// What a Jinja template sees of the tokenizer it is paired with: its named special tokens
    /// (bos_token, eos_token, ...), as transformers passes them (`Tokenizer.namedSpecialTokens`).
    public var specialTokens: [String: String] = [:]
    public var directory: URL = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
    public var origin: String = "built-in"

    /// Whether the rendered prompt is tokenized with the tokenizer's special tokens (BOS): not for a
    /// Jinja template, which writes them itself (transformers tokenizes it with add_special_tokens=False).
    public var tokenizerAddsSpecialTokens: Bool { jinjaFile == nil }

    /// Where `jinja_file` is.
    public var jinjaURL: URL? { jinjaFile.map { resolveManifestPath($0, in: directory) } }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case schema, id, description, source, system, user, assistant, image, stop
        case systemFormat = "system_format", generationPrompt = "generation_prompt", jinjaFile = "jinja_file", contentParts = "content_parts"
    }

    /// A Jinja template, `template` parsed from `jinjaFile` (relative to `directory`).
    public init(id: String, jinjaFile: String, template: JinjaTemplate, directory: URL) {
        schema = Self.schemaVersion
        self.id = id; self.jinjaFile = jinjaFile; self.directory = directory; stop = []
        system = ""; systemFormat = Self.contentSlot; user = ""; assistant = ""; generationPrompt = ""
        jinja = template
    }

    /// Reads and parses `jinja_file` (a manifest's is read when the manifest is).
    public mutating func loadJinja() throws {
        guard let url = jinjaURL else { return }
        do { jinja = try Self.parseJinja(try Self.jinjaText(url), file: url) } catch let ChatTemplateError.unreadableJinja(file, reason) {
            throw ManifestError.invalid(file: origin, detail: "jinja_file: \(file): \(reason)")
        }
    }

    /// A template from a file: a template manifest (.json), or a Hugging Face Jinja chat template
    /// (any other file; its id the file's name).
    public static func read(file url: URL) throws -> ChatTemplate {
        if url.pathExtension == "json" {
            guard case .template(let template) = try AnyManifest.load(contentsOf: url) else {
                throw ManifestError.invalid(file: url.path, detail: "not a chat template (schema \"\(schemaVersion)\")")
            }
            return template
        }
        return try jinjaTemplate(id: url.deletingPathExtension().lastPathComponent, text: try jinjaText(url), file: url)
    }

    /// A Jinja template read from `file` (its origin), its errors naming the file.
    static func jinjaTemplate(id: String, text: String, file: URL) throws -> ChatTemplate {
        var template = ChatTemplate(id: id, jinjaFile: file.lastPathComponent, template: try parseJinja(text, file: file),
                                        directory: file.deletingLastPathComponent())
        template.origin = file.path
        return template
    }

    /// The files transformers saves a checkpoint's chat template in, in the order it reads them.
    public static let checkpointTemplateFiles = ["chat_template.jinja", "chat_template.json", "processor_config.json", "tokenizer_config.json"]

    /// The chat template a checkpoint folder holds: its Jinja text and the file it is in, nil
    /// without one. A `chat_template` field is a string, or transformers 4's list of named templates
    /// (whose "default" generate uses); another value is an error naming the file.
    public static func checkpointTemplateText(in folder: URL, files: [String] = checkpointTemplateFiles) throws -> (text: String, file: URL)? {
        for name in files {
            let url = folder.appendingPathComponent(name)
            guard FileManager.default.fileExists(atPath: url.path) else { continue }
            if name.hasSuffix(".jinja") { return (try jinjaText(url), url) }
            guard let data = FileManager.default.contents(atPath: url.path),
                  let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
                throw ChatTemplateError.unreadableJinja(file: url.path, reason: "not a JSON object")
            }
            guard let value = object["chat_template"], !(value is NSNull) else { continue }
            let named = (value as? [[String: Any]])?.first { $0["name"] as? String == "default" }?["template"]
            guard let text = value as? String ?? named as? String else {
                throw ChatTemplateError.unreadableJinja(file: url.path, reason: "its chat_template is neither a template nor a list holding a \"default\" one")
            }
            return (text, url)
        }
        return nil
    }

    /// The chat template beside a language model's tokenizer file, as transformers' tokenizer
    /// carries it (chat_template.jinja, chat_template.json, tokenizer_config.json), for `id`; nil
    /// without one, and for a multimodal checkpoint's folder (a processor's template reads content
    /// parts, not the text turns a language model gets).
    public static func besideTokenizer(_ tokenizerFile: URL, id: String) throws -> ChatTemplate? {
        let folder = tokenizerFile.deletingLastPathComponent()
        if ["processor_config.json", "preprocessor_config.json"].contains(where: { FileManager.default.fileExists(atPath: folder.appendingPathComponent($0).path) }) {
            return nil
        }
        guard let found = try checkpointTemplateText(in: folder, files: checkpointTemplateFiles.filter { $0 != "processor_config.json" }) else { return nil }
        return try jinjaTemplate(id: id, text: found.text, file: found.file)
    }

    /// The text of a Jinja template file; errors name it.
    static func jinjaText(_ url: URL) throws -> String {
        if let reason = notARegularFile(url.path) { throw ChatTemplateError.unreadableJinja(file: url.path, reason: reason) }
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw ChatTemplateError.unreadableJinja(file: url.path, reason: "no such file or not readable")
        }
        guard let text = String(data: data, encoding: .utf8) else { throw ChatTemplateError.unreadableJinja(file: url.path, reason: "not UTF-8 text") }
        return text
    }

    /// `text` parsed; an error names `file`, where the text came from.
    static func parseJinja(_ text: String, file: URL) throws -> JinjaTemplate {
        do { return try JinjaTemplate(text) } catch {
            throw ChatTemplateError.unreadableJinja(file: file.path, reason: error.errorDescription ?? "\(error)")
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(schema, forKey: .schema)
        try c.encode(id, forKey: .id)
        try c.encodeIfPresent(description, forKey: .description)
        try c.encodeIfPresent(source, forKey: .source)
        if let jinjaFile {
            try c.encode(jinjaFile, forKey: .jinjaFile)
            try c.encodeIfPresent(contentParts, forKey: .contentParts)
        } else {
            try c.encode(system, forKey: .system)
            try c.encode(systemFormat, forKey: .systemFormat)
            try c.encode(user, forKey: .user)
            try c.encode(assistant, forKey: .assistant)
            try c.encode(generationPrompt, forKey: .generationPrompt)
            try c.encodeIfPresent(image, forKey: .image)
        }
        try c.encode(stop, forKey: .stop)
    }

    public init(id: String, system: String = "", systemFormat: String = "{{content}}", user: String, assistant: String,
                generationPrompt: String, image: ImageRule? = nil, stop: [String] = []) {
        schema = Self.schemaVersion
        self.id = id; self.system = system; self.systemFormat = systemFormat; self.user = user
        self.assistant = assistant; self.generationPrompt = generationPrompt; self.image = image; self.stop = stop
    }

    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        schema = try c.decode(String.self, forKey: .schema)
        id = try c.decode(String.self, forKey: .id)
        description = try c.decodeIfPresent(String.self, forKey: .description)
        source = try c.decodeIfPresent(String.self, forKey: .source)
        stop = try c.decodeIfPresent([String].self, forKey: .stop) ?? []
        try checkManifestID(id, key: CodingKeys.id)
        if stop.contains("") {
            throw DecodingError.dataCorrupted(.init(codingPath: [CodingKeys.stop], debugDescription: "an empty stop string would end every answer at once"))
        }
        if let file = try c.decodeIfPresent(String.self, forKey: .jinjaFile) {
            guard !file.isEmpty else { throw DecodingError.dataCorrupted(.init(codingPath: [CodingKeys.jinjaFile], debugDescription: "must name a file")) }
            for key in [CodingKeys.system, .systemFormat, .user, .assistant, .generationPrompt, .image] where c.contains(key) {
                throw DecodingError.dataCorrupted(.init(codingPath: [key], debugDescription:
                    "a template with jinja_file writes the whole prompt itself: give jinja_file or the slots (user, assistant, ...), not both"))
            }
            jinjaFile = file
            contentParts = try c.decodeIfPresent([String: String].self, forKey: .contentParts)
            if let contentParts, contentParts.keys.contains("") || contentParts.values.contains("") {
                throw DecodingError.dataCorrupted(.init(codingPath: [CodingKeys.contentParts], debugDescription: "placeholders and part types must not be empty"))
            }
            system = ""; systemFormat = Self.contentSlot; user = ""; assistant = ""; generationPrompt = ""
            return
        }
        if c.contains(.contentParts) {
            throw DecodingError.dataCorrupted(.init(codingPath: [CodingKeys.contentParts], debugDescription: "only a template with jinja_file takes content_parts"))
        }
        system = try c.decodeIfPresent(String.self, forKey: .system) ?? ""
        systemFormat = try c.decodeIfPresent(String.self, forKey: .systemFormat) ?? Self.contentSlot
        user = try c.decode(String.self, forKey: .user)
        assistant = try c.decode(String.self, forKey: .assistant)
        generationPrompt = try c.decode(String.self, forKey: .generationPrompt)
        image = try c.decodeIfPresent(ImageRule.self, forKey: .image)
        if !assistant.contains(Self.contentSlot) {
            throw DecodingError.dataCorrupted(.init(codingPath: [CodingKeys.assistant], debugDescription: "must hold {{content}} (where the answer goes)"))
        }
        // {{content}} is the one slot, filled once: another spelling or a second one would stay in
        // the prompt as text. (A slot may leave it out: TinyLLaVA's pretrain template drops the text.)
        var slots: [(CodingKey, String)] = [(CodingKeys.systemFormat, systemFormat), (CodingKeys.user, user), (CodingKeys.assistant, assistant),
                                            (CodingKeys.generationPrompt, generationPrompt)]
        if let image { slots.append((CodingKeys.image, image.format)) }
        for (key, text) in slots {
            let filled = key.stringValue == CodingKeys.generationPrompt.stringValue ? 0 : 1
            let braces = text.components(separatedBy: "{{").count - 1, contents = text.components(separatedBy: Self.contentSlot).count - 1
            if braces != contents || contents > filled {
                throw DecodingError.dataCorrupted(.init(codingPath: [key], debugDescription:
                    filled == 0 ? "holds \"{{\": nothing is filled in here" : "holds \"{{\" other than one {{content}} (the one slot, filled once)"))
            }
        }
    }

    /// TinyLLaVA's StringFormatter: the first {{content}} is replaced (a slot without one drops the content).
    static func fill(_ slot: String, _ content: String) -> String {
        guard let range = slot.range(of: contentSlot) else { return slot }
        return slot.replacingCharacters(in: range, with: content)
    }

    /// One turn's text as the user slot receives it: a turn holding the placeholder has every
    /// occurrence removed and one put in front (TinyLLaVA supports one image per turn).
    func userContent(_ text: String) -> String {
        guard let image, text.contains(image.placeholder) else { return text }
        let rest = text.replacingOccurrences(of: image.placeholder, with: "").trimmingCharacters(in: .whitespacesAndNewlines)
        return Self.fill(image.format, rest).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The prompt for a conversation: an optional leading system turn, then user and assistant
    /// turns alternating from a user turn. Ending on a user turn opens the answer
    /// (`generation_prompt`); ending on an assistant turn renders the finished conversation.
    /// A Jinja template sees the turns as `messages`, `add_generation_prompt` (the conversation ends
    /// on a user turn), `specialTokens` and, through `strftime_now`, the date `now`; it decides
    /// itself which conversations it takes.
    /// `continuingAnswer`: the conversation ends on an assistant turn that the model is to go on
    /// writing (transformers' continue_final_message, its pipeline's default for such a chat): the
    /// prompt ends right after that turn's text, with no end-of-turn and no generation prompt.
    public func render(_ conversation: [ChatTurn], now: Date = Date(), continuingAnswer: Bool = false) throws -> String {
        if continuingAnswer, conversation.last?.role != "assistant" {
            throw ChatTemplateError.badConversation("only an assistant turn can be continued, and the conversation ends on \(conversation.last.map { "a \"\($0.role)\" turn" } ?? "nothing")")
        }
        if let jinja {
            // As transformers: a tag after the final answer marks where the prompt is cut.
            let tag = "CONTINUE_FINAL_MESSAGE_TAG "
            var turns = conversation
            if continuingAnswer { turns[turns.count - 1].content += tag }
            var context = specialTokens.mapValues { JinjaValue.string($0) }
            context["messages"] = .list(turns.map { .dict(JinjaDict([("role", .string($0.role)), ("content", messageContent($0.content))])) })
            context["add_generation_prompt"] = .bool(!continuingAnswer && conversation.last?.role != "assistant")
            // transformers always passes these, None without tools or documents: defined, and none.
            context["tools"] = JinjaValue.none
            context["documents"] = JinjaValue.none
            var rendered: String
            do { rendered = try jinja.render(context, now: now) } catch {
                throw ChatTemplateError.jinja(template: id, file: jinjaURL?.path ?? "", error)
            }
            guard continuingAnswer else { return rendered }
            let final = conversation[conversation.count - 1].content.trimmingCharacters(in: .whitespacesAndNewlines)
            let mark = tag.trimmingCharacters(in: .whitespaces)
            guard rendered.contains(final), let at = rendered.range(of: mark, options: .backwards) else {
                throw ChatTemplateError.badConversation("chat template '\(id)' drops part of the final answer, which cannot be continued then")
            }
            // A template that keeps the answer's spacing is cut at the tag; one that trimmed it, before the spaces too.
            let keepsSpacing = rendered[at.lowerBound...].hasPrefix(tag)
            rendered = String(rendered[..<at.lowerBound])
            if !keepsSpacing { while let last = rendered.last, last.isWhitespace { rendered.removeLast() } }
            return rendered
        }
        var turns = conversation[...]
        var systemText = system
        if let first = turns.first, first.role == "system" {
            systemText = first.content
            turns = turns.dropFirst()
        }
        guard !turns.isEmpty else { throw ChatTemplateError.badConversation("holds no user turn") }
        var out = systemText.isEmpty ? "" : Self.fill(systemFormat, systemText)
        for (i, turn) in turns.enumerated() {
            let expected = i % 2 == 0 ? "user" : "assistant"
            guard turn.role == expected else {
                let index = i + (conversation.count - turns.count)
                throw ChatTemplateError.badConversation(
                    "turn \(index) has role \"\(turn.role)\", expected \"\(expected)\" (a leading \"system\" turn, then \"user\" and \"assistant\" alternating)")
            }
            if continuingAnswer, i == turns.count - 1, let slot = assistant.range(of: Self.contentSlot) {
                out += assistant[..<slot.lowerBound] + turn.content  // the answer so far, left open
                return out
            }
            out += expected == "user" ? Self.fill(user, userContent(turn.content)) : Self.fill(assistant, turn.content)
        }
        if turns.count % 2 == 1 { out += generationPrompt }
        return out
    }

    /// A turn's content as a Jinja template reads it: the text, or with `contentParts` the list of
    /// its parts, text runs trimmed of the whitespace next to a placeholder ("<image>\nWhat is it?"
    /// is an image part, then the text "What is it?", as a processor's caller would write it).
    func messageContent(_ text: String) -> JinjaValue {
        guard let contentParts, !contentParts.isEmpty else { return .string(text) }
        var parts: [JinjaValue] = []
        var rest = Substring(text), afterPlaceholder = false
        func addText(_ run: Substring, beforePlaceholder: Bool) {
            var run = run
            if afterPlaceholder { run = run.drop(while: \.isWhitespace) }
            if beforePlaceholder { while let last = run.last, last.isWhitespace { run = run.dropLast() } }
            if !run.isEmpty { parts.append(.dict(JinjaDict([("type", .string("text")), ("text", .string(String(run)))]))) }
        }
        // The earliest placeholder, the longest where two start at once.
        func earliest() -> (range: Range<Substring.Index>, type: String)? {
            var best: (range: Range<Substring.Index>, type: String)?
            for (placeholder, type) in contentParts {
                guard let range = rest.range(of: placeholder) else { continue }
                if let current = best, current.range.lowerBound < range.lowerBound
                    || (current.range.lowerBound == range.lowerBound && current.range.upperBound >= range.upperBound) { continue }
                best = (range, type)
            }
            return best
        }
        while let next = earliest() {
            addText(rest[..<next.range.lowerBound], beforePlaceholder: true)
            parts.append(.dict(JinjaDict([("type", .string(next.type))])))
            rest = rest[next.range.upperBound...]
            afterPlaceholder = true
        }
        addText(rest, beforePlaceholder: false)
        return .list(parts)
    }

    /// A single user message.
    public func render(prompt: String) throws -> String { try render([ChatTurn(role: "user", content: prompt)]) }

    /// `render`, refusing to lose a placeholder the turns hold (a user slot without {{content}}
    /// drops the prompt's text, placeholder and all): its input would silently go unused.
    public func render(_ conversation: [ChatTurn], keeping placeholders: [String], continuingAnswer: Bool = false) throws -> String {
        let text = try render(conversation, continuingAnswer: continuingAnswer)
        func count(_ placeholder: String, in text: String) -> Int { text.components(separatedBy: placeholder).count - 1 }
        for placeholder in placeholders {
            let given = conversation.reduce(0) { $0 + count(placeholder, in: $1.content) }, kept = count(placeholder, in: text)
            if kept < given { throw ChatTemplateError.dropsPlaceholder(template: id, placeholder: placeholder, given: given, kept: kept) }
        }
        return text
    }
}
