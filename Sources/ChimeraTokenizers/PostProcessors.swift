import Foundation

/// The `post_processor` section: adds special tokens around an encoded sequence
/// (only when `encode(..., addSpecialTokens: true)`). Pairs are not supported.
protocol PostProcessor: Sendable {
    func process(_ ids: [Int]) -> [Int]
    /// The id of a special token put in front of every sequence (BOS), if any.
    var bosTokenID: Int? { get }
}

enum PostProcessors {
    static func make(_ node: ConfigNode) throws(TokenizerError) -> any PostProcessor {
        switch try node.type() {
        case "TemplateProcessing": return try TemplateProcessor(node: node)
        case "ByteLevel": return WrapProcessor(prefix: [], suffix: [])  // only adjusts offsets
        case "Sequence":
            return SequenceProcessor(steps: try node.required("processors").asArray().map { node throws(TokenizerError) in try make(node) })
        case "BertProcessing", "RobertaProcessing":
            // "cls": ["[CLS]", 101], "sep": ["[SEP]", 102]
            let id = { (key: String) throws(TokenizerError) -> Int in
                let field = try node.required(key)
                let pair = try field.asArray()
                guard pair.count == 2 else { throw field.invalid("[token, id]") }
                return try pair[1].asInt()
            }
            return WrapProcessor(prefix: [try id("cls")], suffix: [try id("sep")])
        case let other:
            throw node.unsupported("post_processor type \"\(other)\"")
        }
    }
}

struct SequenceProcessor: PostProcessor {
    let steps: [any PostProcessor]
    func process(_ ids: [Int]) -> [Int] { steps.reduce(ids) { $1.process($0) } }
    var bosTokenID: Int? { steps.lazy.compactMap(\.bosTokenID).first }
}

struct WrapProcessor: PostProcessor {
    let prefix: [Int]
    let suffix: [Int]
    func process(_ ids: [Int]) -> [Int] { prefix + ids + suffix }
    var bosTokenID: Int? { prefix.first }
}

/// `"single": [{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}}]` with the
/// ids of each special token in `special_tokens`.
struct TemplateProcessor: PostProcessor {
    enum Piece { case special([Int]), sequence }
    let pieces: [Piece]

    init(node: ConfigNode) throws(TokenizerError) {
        var specials: [String: [Int]] = [:]
        for (name, special) in try node["special_tokens"]?.asObject() ?? [] {
            specials[name] = try special.required("ids").asArray().map { node throws(TokenizerError) in try node.asInt() }
        }
        pieces = try node.required("single").asArray().map { item throws(TokenizerError) -> Piece in
            if let special = item["SpecialToken"] {
                let name = try special.string("id")
                guard let ids = specials[name] else {
                    throw .invalidField(file: node.file, field: special.path + ".id",
                                        detail: "\"\(name)\" is not listed in special_tokens")
                }
                return .special(ids)
            }
            guard item["Sequence"] != nil else { throw item.invalid("a SpecialToken or Sequence item") }
            return .sequence
        }
    }

    func process(_ ids: [Int]) -> [Int] {
        pieces.flatMap { piece -> [Int] in
            switch piece {
            case .special(let special): special
            case .sequence: ids
            }
        }
    }

    var bosTokenID: Int? {
        if case .special(let ids)? = pieces.first { return ids.first }
        return nil
    }
}
