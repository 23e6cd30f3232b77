import Foundation

/// Why two parts do not fit, in words a user can act on.
public enum CompatibilityProblem: Sendable, Equatable, CustomStringConvertible {
    case widthMismatch(from: String, width: Int, to: String, expects: Int)
    /// A connector that keeps its input's width between an encoder and a language model of others.
    case widthKept(encoder: String, connector: String, width: Int, languageModel: String, expects: Int)
    case tokensOverContext(tokens: Int, languageModel: String, context: Int)
    case tokenCountRejected(connector: String, tokens: Int)
    case wrongKind(id: String, expected: ComponentKind, found: ComponentKind)
    case missingPlaceholder(input: Int)
    case tokenizerMissing(languageModel: String, file: String)
    case unknownFamily(id: String, family: String)
    case invalidConfig(id: String, reason: String)

    public var description: String {
        switch self {
        case let .widthMismatch(from, width, to, expects):
            return "width mismatch: '\(from)' produces width \(width), '\(to)' expects \(expects)"
        case let .widthKept(encoder, connector, width, lm, expects):
            return "width mismatch: '\(encoder)' produces width \(width), which '\(connector)' keeps, '\(lm)' expects \(expects)"
        case let .tokensOverContext(tokens, lm, context):
            return "token count \(tokens) exceeds the context length \(context) of '\(lm)'"
        case let .tokenCountRejected(connector, tokens):
            return "connector '\(connector)' cannot take \(tokens) tokens"
        case let .wrongKind(id, expected, found):
            return "'\(id)' is a \(found.rawValue), expected a \(expected.rawValue)"
        case let .missingPlaceholder(input):
            return "inputs[\(input)]: placeholder is empty; a prompt needs a placeholder such as \"<image>\" to place the features"
        case let .tokenizerMissing(lm, file):
            return "language model '\(lm)': tokenizer file \(file) does not exist"
        case let .unknownFamily(id, family):
            return "'\(id)': no component family named '\(family)' is registered"
        case let .invalidConfig(id, reason):
            return "'\(id)': \(reason)"
        }
    }

    /// A file not (yet) on disk rather than a misfit of the parts.
    public var isMissingFile: Bool {
        if case .tokenizerMissing = self { return true }
        return false
    }
}

/// Checks from manifests alone (no weights read) whether encoder → connector → language model fit.
public struct CompatibilityChecker: Sendable {
    public let catalog: Catalog
    public let families: FamilyRegistry

    public init(catalog: Catalog, families: FamilyRegistry) {
        self.catalog = catalog
        self.families = families
    }

    /// Rows of one input after feature selection.
    public static func selectedTokens(_ encoder: ComponentManifest, select: InputBinding.Selection) -> Int {
        let tokens = encoder.output?.tokens ?? 0
        return select == .patch ? max(tokens - 1, 0) : tokens
    }

    /// The language model's embedding width, from its config.
    public static func languageModelWidth(_ lm: ComponentManifest) -> Int? { lm.config["hidden_size"]?.intValue }

    /// Problems with one manifest on its own: unknown family, config the family refuses.
    public func problems(of manifest: ComponentManifest) -> [CompatibilityProblem] {
        guard let family = families.families[manifest.family] else {
            return [.unknownFamily(id: manifest.id, family: manifest.family)]
        }
        if family.kind != manifest.kind { return [.wrongKind(id: manifest.id, expected: family.kind, found: manifest.kind)] }
        do { try family.validate(manifest) } catch {
            return [.invalidConfig(id: manifest.id, reason: (error as? LocalizedError)?.errorDescription ?? "\(error)")]
        }
        if manifest.kind == .languageModel, let tokenizer = manifest.tokenizer {
            let url = manifest.resolve(tokenizer.file)
            if !FileManager.default.fileExists(atPath: url.path) {
                return [.tokenizerMissing(languageModel: manifest.id, file: url.path)]
            }
        }
        return []
    }

    /// Problems of encoder → connector → language model (`select` decides the token count).
    public func problems(encoder: ComponentManifest, connector: ComponentManifest, languageModel: ComponentManifest,
                         select: InputBinding.Selection = .patch) -> [CompatibilityProblem] {
        var out: [CompatibilityProblem] = []
        for (m, kind) in [(encoder, ComponentKind.encoder), (connector, .connector), (languageModel, .languageModel)] where m.kind != kind {
            out.append(.wrongKind(id: m.id, expected: kind, found: m.kind))
        }
        if !out.isEmpty { return out }
        out += problems(encoder: encoder, connector: connector)
        out += problems(connector: connector, languageModel: languageModel)
        if families.families[connector.family]?.keepsWidth == true, let width = encoder.output?.width,
           let expects = Self.languageModelWidth(languageModel), width != expects {
            out.append(.widthKept(encoder: encoder.id, connector: connector.id, width: width, languageModel: languageModel.id, expects: expects))
        }
        for m in [encoder, connector, languageModel] { out += problems(of: m) }
        let tokens = Self.selectedTokens(encoder, select: select)
        if let context = languageModel.contextLength {
            let produced = connectorTokens(connector, input: tokens)
            if let produced, produced > context {
                out.append(.tokensOverContext(tokens: produced, languageModel: languageModel.id, context: context))
            } else if produced == nil {
                out.append(.tokenCountRejected(connector: connector.id, tokens: tokens))
            }
        }
        return out
    }

    public func problems(encoder: ComponentManifest, connector: ComponentManifest) -> [CompatibilityProblem] {
        guard let width = encoder.output?.width, let expects = connector.inputWidth?.value, width != expects else { return [] }
        return [.widthMismatch(from: encoder.id, width: width, to: connector.id, expects: expects)]
    }

    public func problems(connector: ComponentManifest, languageModel: ComponentManifest) -> [CompatibilityProblem] {
        guard let width = connector.outputWidth?.value, let expects = Self.languageModelWidth(languageModel),
              width != expects else { return [] }
        return [.widthMismatch(from: connector.id, width: width, to: languageModel.id, expects: expects)]
    }

    /// Tokens out of a connector for `input` tokens in. The built-in projectors keep the count.
    public func connectorTokens(_ connector: ComponentManifest, input: Int) -> Int? {
        guard let family = families.families[connector.family] else { return input }
        return family.connectorTokens(connector, input)
    }

    /// Feature rows one input of `binding` puts in the prompt (nil when its connector cannot take
    /// what its encoder gives), from the manifests.
    public func inputRows(_ binding: InputBinding) throws -> Int? {
        inputRows(encoder: try catalog.component(binding.encoder, kind: .encoder), connector: try catalog.component(binding.connector, kind: .connector),
                  select: binding.select)
    }

    func inputRows(encoder: ComponentManifest, connector: ComponentManifest, select: InputBinding.Selection) -> Int? {
        connectorTokens(connector, input: Self.selectedTokens(encoder, select: select))
    }

    /// Refuses an assembly whose parts do not fit (files not yet downloaded aside), as every
    /// command that runs or sizes it does.
    public func requireFit(_ assembly: AssemblyManifest) throws {
        let problems = problems(assembly: assembly, filesOnDisk: false)
        guard problems.isEmpty else { throw AssemblyError.incompatible(assembly: assembly.id, problems: problems) }
    }

    /// Problems of a whole assembly.
    /// `filesOnDisk: false` leaves out files not yet downloaded (weights, tokenizers).
    public func problems(assembly: AssemblyManifest, filesOnDisk: Bool = true) -> [String] {
        var out: [String] = []
        let lm: ComponentManifest
        do { lm = try catalog.component(assembly.languageModel, kind: .languageModel) } catch {
            return [(error as? LocalizedError)?.errorDescription ?? "\(error)"]
        }
        if assembly.inputs.isEmpty { out += problems(of: lm).filter { filesOnDisk || !$0.isMissingFile }.map(\.description) }
        var totalTokens = 0
        for (i, input) in assembly.inputs.enumerated() {
            if input.placeholder.isEmpty { out.append(CompatibilityProblem.missingPlaceholder(input: i).description) }
            do {
                let encoder = try catalog.component(input.encoder, kind: .encoder)
                let connector = try catalog.component(input.connector, kind: .connector)
                out += problems(encoder: encoder, connector: connector, languageModel: lm, select: input.select)
                    .filter { filesOnDisk || !$0.isMissingFile }.map { "inputs[\(i)]: \($0)" }
                if let count = families.families[encoder.family]?.hiddenStates(encoder), hiddenStateIndex(input.featureLayer, count: count) == nil {
                    out.append("inputs[\(i)].feature_layer: \(input.featureLayer) is out of range: encoder '\(encoder.id)' has \(count) hidden states (\(-count)...\(count - 1))")
                }
                totalTokens += inputRows(encoder: encoder, connector: connector, select: input.select) ?? 0
            } catch {
                out.append("inputs[\(i)]: " + ((error as? LocalizedError)?.errorDescription ?? "\(error)"))
            }
        }
        if assembly.inputs.count > 1, let context = lm.contextLength, totalTokens > context {
            out.append(CompatibilityProblem.tokensOverContext(tokens: totalTokens, languageModel: lm.id, context: context).description)
        }
        var seen = Set<String>()
        return out.filter { seen.insert($0).inserted }
    }
}

/// One encoder → connector → language model chain of the catalogue and why it does not fit.
public struct CompatibilityCell: Codable, Sendable, Equatable {
    public var encoder: String
    public var connector: String
    public var languageModel: String
    public var fits: Bool
    public var reasons: [String]
    enum CodingKeys: String, CodingKey { case encoder, connector, fits, reasons, languageModel = "language_model" }
}

extension CompatibilityChecker {
    /// Every encoder × connector × language model of the catalogue (sorted by id), judged on shapes
    /// and families alone: files not yet downloaded (weights, tokenizers) are `chimera list`'s business.
    public func matrix(select: InputBinding.Selection = .patch) -> [CompatibilityCell] {
        let encoders = catalog.list(kind: .encoder), connectors = catalog.list(kind: .connector)
        let languageModels = catalog.list(kind: .languageModel)
        var cells: [CompatibilityCell] = []
        for e in encoders {
            for c in connectors {
                for l in languageModels {
                    let reasons = problems(encoder: e, connector: c, languageModel: l, select: select)
                        .filter { !$0.isMissingFile }.map(\.description)
                    var seen = Set<String>()
                    let unique = reasons.filter { seen.insert($0).inserted }
                    cells.append(CompatibilityCell(encoder: e.id, connector: c.id, languageModel: l.id, fits: unique.isEmpty, reasons: unique))
                }
            }
        }
        return cells
    }
}
