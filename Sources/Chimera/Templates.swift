import ChimeraIO
import Foundation

// Chat templates as data (manifest kind "chimera.template/v1", files under manifests/templates/).
// The fields restate TinyLLaVA_Factory's Template (tinyllava/data/template/base.py): a system slot
// written once, a user slot and an assistant slot per turn, the image placeholder moved to the front
// of the user turn that holds it, and the stop string that ends an answer. TinyLLaVA derives the
// open answer's prefix ("ASSISTANT:") from the assistant slot; here it is spelled out as
// `generation_prompt`, so that no template depends on where a colon happens to stand.

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
    public var errorDescription: String? {
        switch self {
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
    public var directory: URL = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
    public var origin: String = "built-in"

    enum CodingKeys: String, CodingKey, CaseIterable {
        case schema, id, description, source, system, user, assistant, image, stop
        case systemFormat = "system_format", generationPrompt = "generation_prompt"
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
        system = try c.decodeIfPresent(String.self, forKey: .system) ?? ""
        systemFormat = try c.decodeIfPresent(String.self, forKey: .systemFormat) ?? Self.contentSlot
        user = try c.decode(String.self, forKey: .user)
        assistant = try c.decode(String.self, forKey: .assistant)
        generationPrompt = try c.decode(String.self, forKey: .generationPrompt)
        image = try c.decodeIfPresent(ImageRule.self, forKey: .image)
        stop = try c.decodeIfPresent([String].self, forKey: .stop) ?? []
        try checkManifestID(id, key: CodingKeys.id)
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
        if stop.contains("") {
            throw DecodingError.dataCorrupted(.init(codingPath: [CodingKeys.stop], debugDescription: "an empty stop string would end every answer at once"))
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
    public func render(_ conversation: [ChatTurn]) throws -> String {
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
            out += expected == "user" ? Self.fill(user, userContent(turn.content)) : Self.fill(assistant, turn.content)
        }
        if turns.count % 2 == 1 { out += generationPrompt }
        return out
    }

    /// A single user message.
    public func render(prompt: String) throws -> String { try render([ChatTurn(role: "user", content: prompt)]) }

    /// `render`, refusing to lose a placeholder the turns hold (a user slot without {{content}}
    /// drops the prompt's text, placeholder and all): its input would silently go unused.
    public func render(_ conversation: [ChatTurn], keeping placeholders: [String]) throws -> String {
        let text = try render(conversation)
        func count(_ placeholder: String, in text: String) -> Int { text.components(separatedBy: placeholder).count - 1 }
        for placeholder in placeholders {
            let given = conversation.reduce(0) { $0 + count(placeholder, in: $1.content) }, kept = count(placeholder, in: text)
            if kept < given { throw ChatTemplateError.dropsPlaceholder(template: id, placeholder: placeholder, given: given, kept: kept) }
        }
        return text
    }
}
