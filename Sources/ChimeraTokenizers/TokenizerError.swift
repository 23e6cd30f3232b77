import Foundation

/// Errors raised while loading a tokenizer.json. Every case names the file and,
/// where relevant, the JSON field (as a dotted path such as `model.type`).
public enum TokenizerError: LocalizedError, Equatable, Sendable {
    case fileNotReadable(file: String, reason: String)
    case malformedJSON(file: String, reason: String)
    case missingField(file: String, field: String)
    case invalidField(file: String, field: String, detail: String)
    case unsupported(file: String, field: String, value: String)
    /// A pattern took longer than `seconds` over a text (ICU backtracks without bound).
    case patternTooSlow(file: String, field: String, characters: Int, seconds: Double)
    /// `encode(_:limit:)`: the text gives more than `limit` ids (tokenizing stopped there).
    case moreTokensThan(limit: Int)

    public var errorDescription: String? {
        switch self {
        case .fileNotReadable(let file, let reason):
            "Cannot read tokenizer file \(file): \(reason)"
        case .malformedJSON(let file, let reason):
            "Malformed JSON in \(file): \(reason)"
        case .missingField(let file, let field):
            "\(file): missing required field \"\(field)\""
        case .invalidField(let file, let field, let detail):
            "\(file): invalid value for field \"\(field)\": \(detail)"
        case .unsupported(let file, let field, let value):
            "\(file): unsupported \(value) in field \"\(field)\""
        case .patternTooSlow(let file, let field, let characters, let seconds):
            "\(file): the pattern in field \"\(field)\" took more than \(Int(seconds)) s over a text of \(characters) characters "
                + "(a pattern that backtracks without bound?); the text was not tokenized"
        case .moreTokensThan(let limit):
            "the text gives more than \(limit) tokens"
        }
    }
}
