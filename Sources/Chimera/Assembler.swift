import ChimeraIO
import ChimeraTensor
import ChimeraTokenizers
import Foundation

public enum AssemblyError: LocalizedError {
    case incompatible(assembly: String, problems: [String])
    case badTokenizer(languageModel: String, reason: String)
    /// Weight or tokenizer files the parts name are not on disk (the catalogue ships none).
    case weightsMissing(assembly: String, parts: [MissingWeights])
    /// Its weights need more memory than the machine has available (MemoryCheck).
    case outOfMemory(assembly: String, needed: Int, available: Int)

    public var errorDescription: String? {
        switch self {
        case let .incompatible(assembly, problems):
            return "assembly '\(assembly)' does not fit together:\n  - " + problems.joined(separator: "\n  - ")
        case let .badTokenizer(lm, reason): return "language model '\(lm)': \(reason)"
        case let .weightsMissing(assembly, parts):
            let lines = parts.map { part in
                "\(part.component): " + part.files.map { $0.hasSuffix("/") ? "\($0) (no *.safetensors in it)" : $0 }.joined(separator: ", ")
                    + (part.quantized ? " (written by chimera quantize: quantize the original assembly again)" : "")
            }
            // One download per source and folder (a TinyLLaVA checkpoint holds all three parts).
            var downloads: [String] = []
            for part in parts {
                guard let source = part.source else { continue }
                for folder in part.folders {
                    let line = "huggingface-cli download \(source) --local-dir \(folder)"
                    if !downloads.contains(line) { downloads.append(line) }
                }
            }
            return "assembly '\(assembly)' cannot run: files its parts need are not on disk (weights are not shipped):\n  - "
                + lines.joined(separator: "\n  - ")
                + (downloads.isEmpty ? "" : "\nDownload each part's source checkpoint as it is into its folder:\n  "
                    + downloads.joined(separator: "\n  "))
        case let .outOfMemory(assembly, needed, available):
            func gib(_ bytes: Int) -> String { String(format: "%.2f GiB", Double(bytes) / Double(1 << 30)) }
            return "assembly '\(assembly)' keeps \(gib(needed)) of weights in memory, more than this machine has available"
                + " (\(gib(available)): MemAvailable + SwapFree): run it with --mapped-weights (read in place from the files),"
                + " or quantize a copy first (chimera quantize \(assembly) --to q4_0)"
        }
    }
}

/// A part of an assembly whose weight or tokenizer files are missing, and where they come from.
public struct MissingWeights: Sendable, Equatable {
    public let component: String
    /// The manifest's "source", when it names a Hugging Face repository ("owner/name") to download
    /// (an imported or quantized manifest's source is a local folder).
    public let source: String?
    /// Missing paths; a weights folder (ending in "/") counts while it holds no safetensors.
    public let files: [String]
    /// Its weights were written by `chimera quantize` (no download brings them back).
    public var quantized = false

    /// The folders the missing files belong in (what a download fills).
    var folders: [String] {
        var out: [String] = []
        for file in files {
            let folder = file.hasSuffix("/") ? String(file.dropLast()) : URL(fileURLWithPath: file).deletingLastPathComponent().path
            if !out.contains(folder) { out.append(folder) }
        }
        return out
    }

    /// The parts of `assembly` (those the catalogue knows) with missing files.
    public static func of(_ assembly: AssemblyManifest, in catalog: Catalog) -> [MissingWeights] {
        assembly.componentIDs.compactMap { id in
            guard let manifest = catalog.components[id] else { return nil }
            let files = manifest.missingFiles
            guard !files.isEmpty else { return nil }
            let quantized = manifest.weights?.quantization != nil
            let repository = manifest.source.flatMap { source in
                source.range(of: #"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$"#, options: .regularExpression) != nil ? source : nil
            }
            var missing = MissingWeights(component: id, source: quantized ? nil : repository, files: files)
            missing.quantized = quantized
            return missing
        }
    }

    /// Refuses, before any loading, an assembly whose parts (those in `only`, when given) name
    /// weight or tokenizer files that are not on disk, saying what to download.
    public static func require(_ assembly: AssemblyManifest, in catalog: Catalog, only: Set<String>? = nil) throws {
        let missing = of(assembly, in: catalog).filter { only?.contains($0.component) ?? true }
        guard missing.isEmpty else { throw AssemblyError.weightsMissing(assembly: assembly.id, parts: missing) }
    }
}

/// Whether the weights an assembly keeps in memory fit in what this machine has, checked before
/// loading: one that does not would be killed by the kernel partway through its loading, with no
/// message at all.
public enum MemoryCheck {
    /// Bytes the parts of `assembly` keep in memory once loaded `stored` (their tensors as stored, or
    /// widened to float32; each tensor of a shared file counted once), from the files' headers.
    public static func weightBytes(_ assembly: AssemblyManifest, in catalog: Catalog, stored: StoredMatrices) throws -> Int {
        var counted: Set<String> = [], bytes = 0
        for id in assembly.componentIDs {
            guard let manifest = catalog.components[id], let weights = manifest.weights else { continue }
            let prefixes = [weights.prefix] + (weights.rename.map { Array($0.values) } ?? [])
            for file in try WeightStore(files: try manifest.weightFiles().map(\.path)).files {
                for tensor in file.tensors.values where prefixes.contains(where: tensor.name.hasPrefix) {
                    guard counted.insert(file.path + "\u{0}" + tensor.name).inserted else { continue }
                    bytes += stored == .widened ? tensor.shape.reduce(1, *) * 4 : tensor.byteCount
                }
            }
        }
        return bytes
    }

    /// What this machine can still give a process, MemAvailable + SwapFree from /proc/meminfo (nil
    /// where there is none).
    public static func availableBytes(meminfo: String? = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8)) -> Int? {
        guard let meminfo else { return nil }
        var kib: [String: Int] = [:]
        for line in meminfo.split(separator: "\n") {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == ":" })
            if fields.count >= 2, let value = Int(fields[1]) { kib[String(fields[0])] = value }
        }
        guard let available = kib["MemAvailable"] else { return nil }
        return (available + (kib["SwapFree"] ?? 0)) * 1024
    }

    /// Refuses, before loading, an assembly whose weights (kept `stored`; mapped ones are the page
    /// cache's to evict) need more memory than `available`.
    public static func require(_ assembly: AssemblyManifest, in catalog: Catalog, stored: StoredMatrices,
                               available: Int? = availableBytes()) throws {
        guard stored != .mapped, let available else { return }
        let needed = try weightBytes(assembly, in: catalog, stored: stored)
        guard needed <= available else { throw AssemblyError.outOfMemory(assembly: assembly.id, needed: needed, available: available) }
    }
}

/// One placeholder of a built model: the encoder and connector behind it.
public struct BoundInput: @unchecked Sendable {
    public let binding: InputBinding
    public let encoder: any ModalityEncoder
    public let connector: any Connector
}

/// A runnable model: a language model, its tokenizer, and an encoder + connector per placeholder.
public final class AssembledModel: @unchecked Sendable {
    public let manifest: AssemblyManifest
    public let languageModel: any LanguageModel
    public let tokenizer: Tokenizer
    public let eosTokenIDs: Set<Int>
    public let inputs: [BoundInput]

    init(manifest: AssemblyManifest, languageModel: any LanguageModel, tokenizer: Tokenizer, eosTokenIDs: Set<Int>, inputs: [BoundInput]) {
        self.manifest = manifest; self.languageModel = languageModel; self.tokenizer = tokenizer
        self.eosTokenIDs = eosTokenIDs; self.inputs = inputs
    }

    /// Every weight of the model under "<component id>/<tensor name>".
    public var parameters: [(name: String, tensor: Tensor)] {
        var out = languageModel.parameters.map { ("\(languageModel.id)/\($0.name)", $0.tensor) }
        for input in inputs {
            out += input.encoder.parameters.map { ("\(input.encoder.id)/\($0.name)", $0.tensor) }
            out += input.connector.parameters.map { ("\(input.connector.id)/\($0.name)", $0.tensor) }
        }
        return out
    }
}

/// Builds assemblies: checks that the parts fit, settles "auto" connector widths, loads weights.
public struct Assembler: Sendable {
    public let catalog: Catalog
    public let families: FamilyRegistry
    /// Progress lines ("loading phi-2 ...") for stderr.
    public var progress: @Sendable (String) -> Void = { _ in }
    /// What becomes of stored weight matrices: `.widened` (the default) lists every weight as float32
    /// in the components' `parameters`; inference keeps them as stored (`.resident` or `.mapped`).
    public var storedMatrices = StoredMatrices.widened

    public init(catalog: Catalog, families: FamilyRegistry, progress: @escaping @Sendable (String) -> Void = { _ in }) {
        self.catalog = catalog; self.families = families; self.progress = progress
    }

    /// An assembly manifest for a choice of parts (what `chimera assemble` writes).
    public static func assembly(id: String, encoder: String, connector: String, languageModel: String,
                                placeholder: String = "<image>", featureLayer: Int = -2,
                                select: InputBinding.Selection = .patch) -> AssemblyManifest {
        AssemblyManifest(id: id, languageModel: languageModel, inputs: [
            InputBinding(placeholder: placeholder, encoder: encoder, connector: connector, featureLayer: featureLayer, select: select),
        ])
    }

    /// The tokenizer a language model's manifest names (a validated manifest names one).
    public static func tokenizer(of languageModel: ComponentManifest) throws -> Tokenizer {
        guard let reference = languageModel.tokenizer else {
            throw AssemblyError.badTokenizer(languageModel: languageModel.id, reason: "its manifest names no tokenizer")
        }
        do { return try Tokenizer(url: languageModel.resolve(reference.file)) } catch {
            throw AssemblyError.badTokenizer(languageModel: languageModel.id, reason: (error as? LocalizedError)?.errorDescription ?? "\(error)")
        }
    }

    /// A language model on its own, as an assembly that runs text only.
    public static func textOnly(_ languageModel: String) -> AssemblyManifest {
        AssemblyManifest(id: languageModel, languageModel: languageModel, inputs: [])
    }

    public func build(_ assembly: AssemblyManifest) throws -> AssembledModel {
        // Misfits first; then files not downloaded yet, with what to fetch.
        try CompatibilityChecker(catalog: catalog, families: families).requireFit(assembly)
        try MissingWeights.require(assembly, in: catalog)
        try MemoryCheck.require(assembly, in: catalog, stored: storedMatrices)

        let lmManifest = try catalog.component(assembly.languageModel, kind: .languageModel)
        progress("loading language model \(lmManifest.id)")
        guard let languageModel = try families.build(lmManifest, storedMatrices: storedMatrices, progress: progress) as? any LanguageModel else {
            throw AssemblyError.incompatible(assembly: assembly.id, problems: ["'\(lmManifest.id)' did not build a language model"])
        }
        let tokenizerReference = lmManifest.tokenizer!
        // A tokenizer may name more tokens than the model embeds (an added <pad> past vocab_size, as
        // transformers runs it): a prompt that holds one is refused when it is embedded, by id.
        let tokenizer = try Self.tokenizer(of: lmManifest)
        // An end-of-sequence id the model cannot produce would never stop an answer.
        for id in tokenizerReference.eosTokenIDs where !(0..<languageModel.vocabularySize).contains(id) {
            throw ManifestError.invalid(file: lmManifest.originFile, detail:
                "tokenizer.eos_token_ids: \(id) is outside the model's vocabulary of \(languageModel.vocabularySize): it would never end an answer")
        }

        var inputs: [BoundInput] = []
        for binding in assembly.inputs {
            let encoderManifest = try catalog.component(binding.encoder, kind: .encoder)
            progress("loading encoder \(encoderManifest.id)")
            guard let encoder = try families.build(encoderManifest, storedMatrices: storedMatrices, progress: progress) as? any ModalityEncoder else {
                throw AssemblyError.incompatible(assembly: assembly.id, problems: ["'\(encoderManifest.id)' did not build an encoder"])
            }
            let connectorManifest = try catalog.component(binding.connector, kind: .connector)
            progress("loading connector \(connectorManifest.id)")
            // "auto" widths are settled by the parts around the connector.
            let built = try families.build(connectorManifest, inputWidth: encoder.output.width, outputWidth: languageModel.hiddenSize,
                                            storedMatrices: storedMatrices, progress: progress)
            guard let connector = built as? any Connector else {
                throw AssemblyError.incompatible(assembly: assembly.id, problems: ["'\(connectorManifest.id)' did not build a connector"])
            }
            guard connector.inputWidth == encoder.output.width, connector.outputWidth == languageModel.hiddenSize else {
                throw AssemblyError.incompatible(assembly: assembly.id, problems: [
                    CompatibilityProblem.widthMismatch(from: encoder.id, width: encoder.output.width, to: connector.id, expects: connector.inputWidth).description,
                    CompatibilityProblem.widthMismatch(from: connector.id, width: connector.outputWidth, to: languageModel.id, expects: languageModel.hiddenSize).description,
                ])
            }
            inputs.append(BoundInput(binding: binding, encoder: encoder, connector: connector))
        }
        return AssembledModel(manifest: assembly, languageModel: languageModel, tokenizer: tokenizer,
                              eosTokenIDs: Set(tokenizerReference.eosTokenIDs), inputs: inputs)
    }
}
