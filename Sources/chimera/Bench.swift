import ArgumentParser
import Chimera
import ChimeraComponents
import ChimeraIO
import ChimeraTensor
import Foundation

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time image encode, prefill and decode of an assembly or of a synthetic model; prints JSON.",
        discussion: """
        Synthetic presets run catalog components with random weights of their dimensions (no download): \
        \(SyntheticPreset.all.map(\.name).joined(separator: ", ")). Progress goes to stderr.
        """)
    @OptionGroup var catalogOptions: CatalogOptions
    @Option(help: "Assembly manifest file or id (its first encoder and its language model)") var assembly: String?
    @Option(help: "Synthetic preset name") var synthetic: String?
    @Option(help: "Weight format of every matrix: f32, f16, bf16, q8_0, q6_0, q4_0 (default: as stored; f32 for synthetic; with q4_0 an lm_head tied to the embeddings is q6_0)")
    var dtype: String?
    @Option(parsing: .unconditional, help: "Prompt length for prefill (default: 640, or as many as fit the context beside the decoded tokens)")
    var promptTokens: Int?
    @Option(parsing: .unconditional, help: "Image encodes: the first is reported apart, the median of the others as image_encode_s") var encodeRuns = 3
    @Option(parsing: .unconditional, help: "Tokens to decode") var decodeTokens = 32
    @OptionGroup var threading: ThreadOptions
    @Flag(help: "Only the language model (skip the encoder)") var noEncoder = false
    @Flag(help: "Only the encoder (skip the language model)") var noLlm = false
    @Flag(help: "Skip measuring the memory read bandwidth that decode is compared with") var noBandwidth = false
    @Option(help: "KV cache precision: f32, or f16 (half the memory; keys and values rounded to float16)") var kvCache = KVPrecision.f32
    @OptionGroup var sampling: SamplingOptions
    @OptionGroup var placement: WeightPlacementOptions

    func validate() throws {
        guard promptTokens ?? 1 > 0 else { throw ValidationError("--prompt-tokens must be positive, found \(promptTokens ?? 0)") }
        guard decodeTokens >= 0 else { throw ValidationError("--decode-tokens must be 0 or more, found \(decodeTokens)") }
        guard (1...1000).contains(encodeRuns) else { throw ValidationError("--encode-runs must be 1...1000, found \(encodeRuns)") }
    }

    func run() throws {
        do {
            threading.apply()
            var format: WeightFormat?
            if let dtype {
                guard let f = WeightFormat(rawValue: dtype) else {
                    throw ValidationError("--dtype '\(dtype)' is not one of \(WeightFormat.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                format = f
            }
            guard (assembly == nil) != (synthetic == nil) else { throw ValidationError("give exactly one of --assembly and --synthetic") }
            guard !placement.mappedWeights || assembly != nil else {
                throw ValidationError("--mapped-weights needs --assembly: synthetic weights are generated in memory, not read from files")
            }
            var bench = Benchmark(families: catalogOptions.families(), format: format)
            bench.promptTokens = promptTokens
            bench.encodeRuns = encodeRuns
            bench.measureBandwidth = !noBandwidth
            bench.decodeTokens = decodeTokens
            bench.kvCache = kvCache
            bench.sampling = GenerationOptions(temperature: sampling.temperature ?? 0, topK: sampling.topK, topP: sampling.topP,
                                               repetitionPenalty: sampling.repetitionPenalty, seed: sampling.seed)
            bench.storedMatrices = placement.storedMatrices
            bench.progress = progress
            var name: String, encoder: ComponentManifest?, llm: ComponentManifest?
            if let synthetic {
                let preset = try SyntheticPreset.named(synthetic)
                name = preset.name
                (encoder, llm) = try preset.manifests(try catalogOptions.catalog())
            } else {
                let (catalog, manifest) = try resolveAssembly(assembly, catalogOptions: catalogOptions)
                // A misfit is refused as generate refuses it, though bench runs its parts apart.
                try CompatibilityChecker(catalog: catalog, families: catalogOptions.families()).requireFit(manifest)
                name = manifest.id
                llm = try catalog.component(manifest.languageModel)
                encoder = try manifest.inputs.first.map { try catalog.component($0.encoder) }
                try MissingWeights.require(manifest, in: catalog, only: Set([noLlm ? nil : llm?.id, noEncoder ? nil : encoder?.id].compactMap { $0 }))
                // With --dtype the matrices are converted from the mapped files: what stays is the new format's.
                if format == nil { try MemoryCheck.require(manifest, in: catalog, stored: placement.storedMatrices) }
                bench.store = { component in
                    guard component.weights != nil else {
                        throw ManifestError.invalid(file: component.origin, detail: "weights: required to benchmark '\(component.id)'")
                    }
                    return .store(try WeightStore(files: try component.weightFiles().map(\.path)))  // folder entries expanded
                }
            }
            if noEncoder { encoder = nil }
            if noLlm { llm = nil }
            try printJSON(try bench.run(name: name, encoder: encoder, languageModel: llm))
        } catch let error as ValidationError {
            throw error
        } catch {
            throw fail(error)
        }
    }
}

struct Quantize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write an assembly's language-model matrices as q8_0, q6_0 or q4_0 blocks, with manifests that point at them.",
        discussion: """
        Embeddings, norms and biases stay float32 (embeddings tied to the lm_head are quantized, to q6_0 \
        when the rest goes to q4_0); the vision encoder and connectors stay as stored \
        (--include-encoder quantizes the encoder too); --keep PREFIX keeps matching tensors (stored names) \
        as they are, --matrix-format PREFIX=FORMAT gives matching matrices another format. The new assembly is <id>-<format> in the output folder.
        """)
    @OptionGroup var catalogOptions: CatalogOptions
    @Argument(help: "Assembly manifest file or id") var assembly: String
    @Option(help: "q8_0, q6_0 or q4_0") var to: String
    @Option(name: .shortAndLong, help: "Output folder (default: ./<assembly id>-<format>)") var output: String?
    @Flag(help: "Quantize the vision encoder's matrices too") var includeEncoder = false
    @Option(help: "Keep tensors whose stored name starts with this (repeatable), e.g. lm_head.") var keep: [String] = []
    @Option(help: ArgumentHelp("Give matrices whose stored name starts with PREFIX another format (repeatable; the last match wins), e.g. model.embed_tokens.=q8_0",
                               valueName: "PREFIX=FORMAT")) var matrixFormat: [String] = []

    func run() throws {
        do {
            guard let format = WeightFormat(rawValue: to), format.isQuantized else {
                throw ValidationError("--to '\(to)' is not one of \(WeightFormat.quantizedNames)")
            }
            let (catalog, manifest) = try resolveAssembly(assembly, catalogOptions: catalogOptions)
            try MissingWeights.require(manifest, in: catalog)
            var quantizer = Quantizer(catalog: catalog, families: catalogOptions.families())
            quantizer.includeEncoder = includeEncoder
            if keep.contains("") { throw ValidationError("--keep needs a prefix (an empty one would keep every matrix as it is)") }
            quantizer.keep = keep
            quantizer.formats = try matrixFormat.map { spec in
                let parts = spec.split(separator: "=", maxSplits: 1).map(String.init)
                guard parts.count == 2, !parts[0].isEmpty, let format = WeightFormat(rawValue: parts[1]) else {
                    let known = WeightFormat.allCases.map(\.rawValue).joined(separator: ", ")
                    throw ValidationError("--matrix-format '\(spec)': expected PREFIX=FORMAT with FORMAT one of \(known)")
                }
                return (parts[0], format)
            }
            quantizer.progress = progress
            let out = URL(fileURLWithPath: output ?? "\(manifest.id)-\(format.rawValue)")
            let result = try quantizer.quantize(manifest, to: format, output: out)
            progress("\(result.quantizedMatrices) matri\(result.quantizedMatrices == 1 ? "x" : "ces") quantized; kept: \(result.keptMatrices.isEmpty ? "none" : result.keptMatrices.joined(separator: ", "))")
            for prefix in result.unusedPrefixes { progress("warning: no matrix of the quantized components starts with '\(prefix)' (--keep or --matrix-format): it changed nothing") }
            print(result.assemblyPath.path)
        } catch let error as ValidationError {
            throw error
        } catch {
            throw fail(error)
        }
    }
}
