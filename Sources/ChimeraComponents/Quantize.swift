import Chimera
import ChimeraIO
import ChimeraTensor
import Foundation

/// `chimera quantize`: rewrites an assembly's weight matrices as q8_0 or q4_0 blocks into new
/// safetensors files, with manifests that point at them.
///
/// What stays higher precision by default, and why:
/// - token embeddings, norms, biases, position and class embeddings: looked up or added, never
///   multiplied as a matrix, so quantizing them saves no bandwidth in decode. Embeddings tied to
///   the lm_head are the exception: every token multiplies by them (in float32 they were a quarter
///   of Qwen2-0.5B's decode traffic), so they are quantized — to q6_0 when the rest goes to q4_0
///   (`WeightFormat.forMatrix(named:)`), and named in the manifest's `higherPrecision`;
/// - the vision encoder (opt in with `includeEncoder`): runs once per image, compute-bound, and
///   its features feed every generated token;
/// - connectors: small, and every image token goes through them;
/// - matrices whose width is not a multiple of the 32-weight block, and any tensor whose stored
///   name starts with one of `keep` (e.g. "lm_head.").
/// `formats` overrides the format of matrices by stored-name prefix (the last match wins), e.g. a
/// tied lm_head at q8_0 under q4_0: ("model.embed_tokens.", .q8_0).
public struct Quantizer {
    public var catalog: Catalog
    public var families: FamilyRegistry
    public var includeEncoder = false
    public var keep: [String] = []
    public var formats: [(prefix: String, format: WeightFormat)] = []
    public var progress: (String) -> Void = { _ in }

    public init(catalog: Catalog, families: FamilyRegistry) { self.catalog = catalog; self.families = families }

    public struct Result {
        public var assemblyPath: URL
        public var componentPaths: [URL]
        public var quantizedMatrices: Int
        public var keptMatrices: [String]
        /// Prefixes of `keep` and `formats` that no matrix of the quantized components starts with
        /// (a typo, or a tensor the model does not have: they changed nothing).
        public var unusedPrefixes: [String] = []
    }

    public func quantize(_ assembly: AssemblyManifest, to format: WeightFormat, output: URL) throws -> Result {
        guard format.isQuantized else {
            throw ManifestError.invalid(file: "--to", detail: "'\(format.rawValue)' is not a quantized format (\(WeightFormat.quantizedNames))")
        }
        // An assembly that would not run is refused before anything is written (as generate refuses it;
        // files not on disk are named by the loading that follows).
        try CompatibilityChecker(catalog: catalog, families: families).requireFit(assembly)
        try createOutputFolder(output)
        let suffix = "-" + format.rawValue
        var written: [ComponentManifest] = []
        var quantizedCount = 0, kept: [String] = [], matrixNames: [String] = []
        var newAssembly = assembly
        newAssembly.id = assembly.id + suffix
        newAssembly.samples = assembly.samples?.mapValues { assembly.resolve($0).path }

        func rewrite(_ id: String, quantize: Bool) throws -> String {
            if let done = written.first(where: { $0.id == id + suffix }) { return done.id }
            var manifest = try catalog.component(id)
            let original = manifest
            manifest.id = id + suffix
            if let tokenizer = manifest.tokenizer { manifest.tokenizer?.file = original.resolve(tokenizer.file).path }
            if let weights = original.weights {
                if quantize {
                    progress("quantizing \(id) to \(format.rawValue)")
                    let file = "\(manifest.id).safetensors"
                    let (count, notQuantized, otherFormats, names) = try quantizeWeights(original, weights: weights, format: format,
                                                                                  to: output.appendingPathComponent(file))
                    quantizedCount += count
                    kept += notQuantized
                    matrixNames += names
                    manifest.weights = WeightsReference(
                        files: [file], prefix: weights.prefix, rename: weights.rename,
                        quantization: WeightQuantization(
                            format: format.rawValue, layout: Self.layout(format),
                            higherPrecision: ["embeddings, norms and biases (float32)"] + notQuantized
                                + otherFormats.map { "\($0.name): \($0.format.rawValue) (\(Self.layout($0.format)))" }))
                } else {
                    // Absolute, and a folder entry still a folder (its trailing "/", see weightFiles).
                    manifest.weights?.files = weights.files.map { original.resolve($0).path + ($0.hasSuffix("/") ? "/" : "") }
                }
            }
            written.append(manifest)
            return manifest.id
        }

        // A Jinja chat template (an import's own) goes along, renamed as the components are, so that
        // the output folder holds all it names.
        var templates: [String: ChatTemplate] = [:]
        func rewriteTemplate(_ id: String?) throws -> String? {
            guard let id, let template = catalog.templates[id], template.jinja != nil, let jinjaURL = template.jinjaURL else { return id }
            if let done = templates[id] { return done.id }
            var copy = template  // (its Jinja, content parts, stop strings and description as they are)
            copy.id = id + suffix
            copy.jinjaFile = "\(copy.id).chat_template.jinja"
            copy.directory = output
            copy.source = template.source ?? jinjaURL.path
            templates[id] = copy
            return copy.id
        }
        newAssembly.chatTemplate = try rewriteTemplate(assembly.chatTemplate)
        newAssembly.languageModel = try rewrite(assembly.languageModel, quantize: true)
        if let index = written.firstIndex(where: { $0.id == newAssembly.languageModel }) {
            written[index].chatTemplate = try rewriteTemplate(written[index].chatTemplate)
        }
        newAssembly.inputs = try assembly.inputs.map { input in
            var input = input
            input.encoder = try rewrite(input.encoder, quantize: includeEncoder)
            input.connector = try rewrite(input.connector, quantize: false)
            return input
        }
        let files = try writeManifests(assembly: newAssembly, components: written, to: output)
        for template in templates.values {
            try writeChatTemplate(template, to: output)
        }
        let unused = (keep + formats.map(\.prefix)).filter { prefix in !matrixNames.contains { $0.hasPrefix(prefix) } }
        return Result(assemblyPath: files.mainPath, componentPaths: files.componentPaths, quantizedMatrices: quantizedCount, keptMatrices: kept,
                      unusedPrefixes: unused)
    }

    /// How `format`'s matrices are stored (the manifest's `layout`; chimera_kernels.h and
    /// q6_blocks.h have the same).
    static func layout(_ format: WeightFormat) -> String {
        let scales = "F16 '<name>.scales' [rows, columns/32]"
        switch format {
        case .f32, .f16, .bf16: return "\(format.rawValue.uppercased()) [rows, columns]"
        case .q8_0: return "I8 [rows, columns] values and \(scales); w = q * scale"
        case .q6_0:
            return "U8 [rows, columns*3/4], six-bit codes by pairs of blocks of 32 (A, B): 16 bytes of A's low 4 bits as q4_0's nibbles, "
                + "16 of B's, then byte j the top 2 bits of A_j, B_j, A_j+16, B_j+16 (bits 0-1, 2-3, 4-5, 6-7); an odd last block: "
                + "its 16 nibble bytes, then byte k the top 2 bits of elements k, k+8, k+16, k+24; \(scales); w = (code - 32) * scale"
        case .q4_0:
            return "U8 [rows, columns/2]: in each block of 32, byte j holds element j (low nibble) and j+16 (high nibble); "
                + "\(scales); w = (nibble - 8) * scale"
        }
    }

    /// Builds the component to learn which tensors it uses and which are matrices, then writes them.
    /// Returns how many matrices were quantized (to any quantized format), the names of those kept
    /// as stored, those written in another format than `format` (a tied lm_head, see
    /// forMatrix(named:); --matrix-format), and every matrix's name.
    func quantizeWeights(_ manifest: ComponentManifest, weights: WeightsReference, format: WeightFormat,
                         to url: URL) throws -> (Int, [String], [(name: String, format: WeightFormat)], [String]) {
        let store = try WeightStore(files: try manifest.weightFiles().map(\.path))  // folder entries expanded
        // Matrices in place from the mapping, in their stored format: quantized straight from f16/bf16
        // (not widened to a float32 copy of the whole model first), and kept ones written as they are.
        let loader = ParameterLoader(source: .store(store), reference: weights, storedMatrices: .mapped)
        let component = try families.family(for: manifest).create(manifest, ComponentBuildContext(weights: loader))
        var matrices: [WeightMatrix] = []  // kept alive until written
        var entries: [SafeTensorsWriter.Entry] = []
        var names = Set<String>(), kept: [String] = [], otherFormats: [(name: String, format: WeightFormat)] = [], quantized = 0
        let report = ByteProgress("quantizing \(manifest.id)", report: progress)
        let totalBytes = Dictionary(loader.matrices.map { ($0.name, $0.matrix.byteCount) }, uniquingKeysWith: { a, _ in a }).values.reduce(0, +)
        var doneBytes = 0
        for (name, matrix) in loader.matrices where !names.contains(name) {
            names.insert(name)
            doneBytes += matrix.byteCount
            report(done: doneBytes, total: totalBytes)
            let chosen: WeightMatrix
            // Embeddings reach `matrices` only when tied to the lm_head (see above).
            let target = formats.last { name.hasPrefix($0.prefix) }?.format ?? format.forMatrix(named: name)
            if keep.contains(where: { name.hasPrefix($0) }) || (target.isQuantized && matrix.columns % 32 != 0) {
                chosen = matrix
                kept.append(name)
            } else {
                chosen = try matrix.converted(to: target, name: name)
                if chosen.format != format { otherFormats.append((name, chosen.format)) }
                if chosen.format.isQuantized { quantized += 1 }
            }
            matrices.append(chosen)
            let dtype: WeightDType
            switch chosen.format {
            case .f32: dtype = .f32
            case .f16: dtype = .f16
            case .bf16: dtype = .bf16
            case .q8_0: dtype = .i8
            case .q6_0, .q4_0: dtype = .u8
            }
            let shape = chosen.format.isQuantized
                ? [chosen.rows, WeightMatrix.valueBytes(chosen.format, rows: 1, columns: chosen.columns)] : [chosen.rows, chosen.columns]
            entries.append(.init(name: name, dtype: dtype, shape: shape, bytes: chosen.valueBytes))
            if let scales = chosen.scaleBytes {
                entries.append(.init(name: name + SafeTensorsFile.scalesSuffix, dtype: .f16, shape: [chosen.rows, chosen.columns / 32], bytes: scales))
            }
        }
        for (name, tensor) in loader.loaded where !names.contains(name) {
            names.insert(name)
            entries.append(.init(name: name, dtype: .f32, shape: tensor.shape,
                                 bytes: UnsafeRawBufferPointer(start: tensor.data, count: tensor.count * 4)))
        }
        try SafeTensorsWriter.write(entries, metadata: ["format": "pt", "chimera.quantization": format.rawValue], to: url)
        withExtendedLifetime((matrices, component, loader)) {}
        return (quantized, kept, otherFormats, loader.matrices.map(\.name))
    }
}
