@testable import ChimeraComponents
import ChimeraIO
import ChimeraTensor
import Foundation
import Testing
@testable import Chimera

/// Accuracy of the reduced-precision paths on the transformers fixtures: f16/bf16 checkpoints keep
/// greedy continuations, q8_0/q4_0 keep logits close to float32.
@Suite struct WeightFormatTests {
    /// The fixture checkpoint with every tensor stored as F16 or BF16 (as Hub checkpoints are).
    static func halfCheckpoint(_ fixture: LLaVAFixture, _ format: WeightFormat) throws -> URL {
        let out = temporaryDirectory()
        for file in try FileManager.default.contentsOfDirectory(atPath: fixture.directory.path) where file != "model.safetensors" {
            try FileManager.default.copyItem(at: fixture.directory.appendingPathComponent(file), to: out.appendingPathComponent(file))
        }
        let store = try WeightStore(files: [fixture.directory.appendingPathComponent("model.safetensors").path])
        var keep: [WeightMatrix] = []
        var entries: [SafeTensorsWriter.Entry] = []
        for name in store.tensorNames {
            let t = try store.tensor(name)
            let m = try WeightMatrix.converting(t.reshaped([1, t.count]), to: format)
            keep.append(m)
            entries.append(.init(name: name, dtype: format == .f16 ? .f16 : .bf16, shape: t.shape, bytes: m.valueBytes))
        }
        try SafeTensorsWriter.write(entries, to: out.appendingPathComponent("model.safetensors"))
        withExtendedLifetime(keep) {}
        return out
    }

    static func build(checkpoint: URL, storedMatrices: StoredMatrices = .resident) throws -> AssembledModel {
        let out = temporaryDirectory()
        let result = try CheckpointImporter(checkpoint: checkpoint, outputDirectory: out).run()
        var catalog = Catalog()
        try catalog.load(directory: out)
        var assembler = Assembler(catalog: catalog, families: BuiltinFamilies.registry())
        assembler.storedMatrices = storedMatrices
        return try assembler.build(try #require(result.assembly))
    }

    @Test(arguments: LLaVAParityTests.fixtures, [WeightFormat.f16, .bf16])
    func halfPrecisionCheckpointsKeepGreedyContinuations(name: String, format: WeightFormat) throws {
        let fixture = try LLaVAFixture(name)
        let checkpoint = try Self.halfCheckpoint(fixture, format)
        let model = try Self.build(checkpoint: checkpoint)
        // The language model's matrices are used in their stored format.
        let llm = try #require(model.languageModel as? DecoderTransformer)
        #expect(llm.layers[0].q.matrix.format == format)
        func logits(_ model: AssembledModel) throws -> Tensor {
            let prepared = try model.prepare(prompt: fixture.prompt, inputs: [model.inputs[0].binding.placeholder: [fixture.image]])
            return try model.languageModel.forward(embeddings: prepared.embeddings,
                                                   cache: model.languageModel.makeCache(capacity: prepared.embeddings.rows), lastOnly: false)
        }
        let ours = try logits(model)
        let rms = Self.relativeRMS(ours, try fixture.reference.tensor("logits"))
        #expect(rms < (format == .f16 ? 0.002 : 0.02), "relative RMS \(rms)")
        // Read in place from the mapped files instead of copied: the same bytes, the same logits.
        #expect(try logits(try Self.build(checkpoint: checkpoint, storedMatrices: .mapped)).toArray() == ours.toArray())
        let result = try model.generate(prompt: fixture.prompt, inputs: [model.inputs[0].binding.placeholder: [fixture.image]],
                                        options: GenerationOptions(maxTokens: fixture.maxNewTokens))
        // bf16 keeps 8 bits of mantissa: on llava-qwen2, whose random logits have near-ties, its
        // rounding flips the third greedy token (the logit bound above still holds there).
        if format == .f16 || name != "llava-qwen2" {
            #expect(result.tokens == fixture.generated)
        }
    }

    /// Logits over the fixture prompt of an assembly quantized by `chimera quantize`'s code path.
    /// Returns the prefill logits of every position, the logits of the last position computed as a
    /// decode step (one row: the int8 matrix-vector kernels), and the assembly file.
    static func quantizedLogits(_ fixture: LLaVAFixture, _ format: WeightFormat, includeEncoder: Bool,
                                formats: [(prefix: String, format: WeightFormat)] = []) throws -> (Tensor, Tensor, URL) {
        let imported = temporaryDirectory()
        let result = try CheckpointImporter(checkpoint: fixture.directory, outputDirectory: imported).run()
        var catalog = Catalog()
        try catalog.load(directory: imported)
        var quantizer = Quantizer(catalog: catalog, families: BuiltinFamilies.registry())
        quantizer.includeEncoder = includeEncoder
        quantizer.formats = formats
        let out = temporaryDirectory()
        let assembly = try #require(result.assembly)
        let written = try quantizer.quantize(assembly, to: format, output: out)
        var quantizedCatalog = Catalog()
        try quantizedCatalog.load(directory: out)
        var assembler = Assembler(catalog: quantizedCatalog, families: BuiltinFamilies.registry())
        assembler.storedMatrices = .resident
        let model = try assembler.build(try quantizedCatalog.assembly(assembly.id + "-" + format.rawValue))
        let prepared = try model.prepare(prompt: fixture.prompt, inputs: [model.inputs[0].binding.placeholder: [fixture.image]])
        let n = prepared.embeddings.rows
        let logits = try model.languageModel.forward(embeddings: prepared.embeddings,
                                                     cache: model.languageModel.makeCache(capacity: n), lastOnly: false).copy()
        let cache = model.languageModel.makeCache(capacity: n)
        _ = try model.languageModel.forward(embeddings: prepared.embeddings.rows(0..<(n - 1)), cache: cache, lastOnly: true)
        let step = try model.languageModel.forward(embeddings: prepared.embeddings.rows((n - 1)..<n), cache: cache, lastOnly: true).copy()
        return (logits, step, written.assemblyPath)
    }

    /// Root-mean-square logit error relative to the spread (standard deviation) of the reference logits.
    static func relativeRMS(_ ours: Tensor, _ reference: Tensor) -> Double {
        let n = Double(reference.count)
        let mean = (0..<reference.count).reduce(0.0) { $0 + Double(reference.data[$1]) } / n
        let variance = (0..<reference.count).reduce(0.0) { $0 + pow(Double(reference.data[$1]) - mean, 2) } / n
        let error = (0..<reference.count).reduce(0.0) { $0 + pow(Double(ours.data[$1] - reference.data[$1]), 2) } / n
        return (error / variance).squareRoot()
    }

    /// Fraction of positions whose argmax agrees, and the largest logit difference.
    static func agreement(_ a: Tensor, _ b: Tensor) -> (top1: Double, worst: Float) {
        let vocab = a.columns
        var same = 0
        for r in 0..<a.rows {
            let ra = UnsafeBufferPointer(start: a.data + r * vocab, count: vocab), rb = UnsafeBufferPointer(start: b.data + r * vocab, count: vocab)
            if ra.indices.max(by: { ra[$0] < ra[$1] }) == rb.indices.max(by: { rb[$0] < rb[$1] }) { same += 1 }
        }
        return (Double(same) / Double(a.rows), maxAbsDifference(a, b))
    }

    @Test(arguments: LLaVAParityTests.fixtures, [WeightFormat.q8_0, .q6_0, .q4_0])
    func quantizedLogitsStayCloseToFloat32(name: String, format: WeightFormat) throws {
        let fixture = try LLaVAFixture(name)
        let expected = try fixture.reference.tensor("logits")
        let (logits, step, assemblyPath) = try Self.quantizedLogits(fixture, format, includeEncoder: false)
        let (top1, worst) = Self.agreement(logits, expected)
        let last = expected.rows((expected.rows - 1)..<expected.rows)
        let (stepTop1, stepWorst) = Self.agreement(step, last)
        let rms = Self.relativeRMS(logits, expected), stepRMS = Self.relativeRMS(step, last)
        print("\(name) \(format.rawValue): top-1 agreement \(top1), max logit error \(worst), relative RMS \(rms); decode step RMS \(stepRMS), top-1 \(stepTop1), max error \(stepWorst)")
        // These tiny random models have nearly flat logits (top-2 margins of a fraction of their
        // spread), so the bounds are looser than on a trained model; a wrong block layout, scale or
        // kernel gives a relative RMS near 1 and chance-level agreement. Prefill and decode both
        // multiply activations rounded through int8 blocks of 32 (as llama.cpp does), and a tied
        // lm_head is quantized too (q8_0): llava-gemma's q8_0 comes to about 0.063 (prefill) and
        // 0.054 (its decode step).
        #expect(rms < (format == .q8_0 ? 0.07 : format == .q6_0 ? 0.2 : 0.5))
        #expect(stepRMS < (format == .q8_0 ? 0.07 : format == .q6_0 ? 0.2 : 0.5))
        #expect(top1 >= (format == .q8_0 ? 0.85 : format == .q6_0 ? 0.6 : 0.4))
        // The manifest documents the layout; the files hold blocks, not floats.
        let folder = assemblyPath.deletingLastPathComponent()
        let llm = try FileManager.default.contentsOfDirectory(atPath: folder.path).first { $0.hasSuffix("\(format.rawValue).safetensors") }
        let store = try WeightStore(files: [folder.appendingPathComponent(try #require(llm)).path])
        // q_proj is quantized when its width holds whole blocks of 32 (llava-a: 64), kept otherwise (llava-b: 48).
        let q = try #require(store.tensorNames.first { $0.hasSuffix("layers.0.self_attn.q_proj.weight") })
        let scales = store.info(q + ".scales")
        if let scales {
            #expect(store.info(q)?.dtype == (format == .q8_0 ? .i8 : .u8))
            #expect(store.info(q)?.shape.last == WeightMatrix.valueBytes(format, rows: 1, columns: try #require(scales.shape.last) * 32))
            #expect(scales.dtype == .f16)
        } else {
            #expect(try #require(store.info(q)?.shape.last) % 32 != 0 && store.info(q)?.dtype == .f32)
        }
        if name == "llava-a" { #expect(scales != nil) }
        // Looked-up embeddings stay float32; tied to the lm_head they are a matrix, quantized (q6_0
        // when the rest is q4_0, named in the manifest).
        let embeddings = try #require(store.tensorNames.first { $0.hasSuffix("embed_tokens.weight") })
        let tied = !store.tensorNames.contains { $0.hasSuffix("lm_head.weight") }
        let embeddingScales = store.info(embeddings + ".scales"), quantized = embeddingScales != nil
        let columns = try #require(embeddingScales.map { $0.shape.last! * 32 } ?? store.info(embeddings)?.shape.last)
        let headFormat = format.forMatrix(named: embeddings)
        #expect(quantized == (tied && columns % 32 == 0), "\(embeddings), tied: \(tied)")
        #expect(quantized || store.info(embeddings)?.dtype == .f32, "\(embeddings), tied: \(tied)")
        if quantized {
            #expect(store.info(embeddings)?.dtype == (headFormat == .q8_0 ? .i8 : .u8))
            let manifestFile = try #require(llm).replacingOccurrences(of: ".safetensors", with: ".component.json")
            let manifest = try String(contentsOf: folder.appendingPathComponent(manifestFile), encoding: .utf8)
            #expect(manifest.contains("embed_tokens.weight: q6_0") == (headFormat == .q6_0 && format != .q6_0), "\(manifestFile): \(manifest)")
        }
    }

    /// `--include-encoder` at q8_0: the vision encoder's block-aligned matrices are quantized too, and
    /// its products (prefill-sized batches of patches: the int8 GEMM with VNNI) keep the logits as
    /// close to float32 as the language model's own q8_0 error allows.
    @Test(arguments: LLaVAParityTests.fixtures) func quantizedEncoderStaysCloseToFloat32(name: String) throws {
        let fixture = try LLaVAFixture(name)
        let expected = try fixture.reference.tensor("logits")
        let (logits, _, assemblyPath) = try Self.quantizedLogits(fixture, .q8_0, includeEncoder: true)
        let folder = assemblyPath.deletingLastPathComponent()
        var quantizedEncoderMatrices = 0
        for file in try FileManager.default.contentsOfDirectory(atPath: folder.path) where file.hasSuffix(".safetensors") {
            let store = try WeightStore(files: [folder.appendingPathComponent(file).path])
            quantizedEncoderMatrices += store.tensorNames.filter { $0.contains("vision") && $0.hasSuffix(".weight.scales") }.count
        }
        print("\(name) q8_0 with its encoder: \(quantizedEncoderMatrices) encoder matrices quantized, relative RMS \(Self.relativeRMS(logits, expected))")
        #expect(quantizedEncoderMatrices > 0)
        #expect(Self.relativeRMS(logits, expected) < 0.07)
        #expect(Self.agreement(logits, expected).top1 >= 0.85)
    }

    /// Formats by stored-name prefix override the default choice (the last match wins): here the tied
    /// lm_head at q8_0 under q4_0 and one layer's q_proj at f16; the model still runs close to float32.
    @Test func matrixFormatsOverrideTheDefaultByPrefix() throws {
        let fixture = try LLaVAFixture("llava-qwen2")
        // Stored names: the checkpoint's (the imported manifests point at its file).
        let embeddings = "model.language_model.embed_tokens.", qProj = "model.language_model.layers.1.self_attn.q_proj."
        let (logits, _, assemblyPath) = try Self.quantizedLogits(fixture, .q4_0, includeEncoder: false,
                                                                  formats: [(qProj, .q8_0), (embeddings, .q8_0), (qProj, .f16)])
        let folder = assemblyPath.deletingLastPathComponent()
        let llm = try #require(FileManager.default.contentsOfDirectory(atPath: folder.path).first { $0.hasSuffix("q4_0.safetensors") })
        let store = try WeightStore(files: [folder.appendingPathComponent(llm).path])
        func stored(_ prefix: String) -> WeightDType? { store.tensorNames.first { $0.hasSuffix(prefix + "weight") }.flatMap { store.info($0)?.dtype } }
        #expect(stored(embeddings) == .i8)
        #expect(stored(qProj) == .f16)
        #expect(stored("layers.0.self_attn.q_proj.") == .u8)
        let manifest = try String(contentsOf: folder.appendingPathComponent(llm.replacingOccurrences(of: ".safetensors", with: ".component.json")),
                                  encoding: .utf8)
        #expect(manifest.contains("embed_tokens.weight: q8_0") && manifest.contains("q_proj.weight: f16"))
        #expect(Self.relativeRMS(logits, try fixture.reference.tensor("logits")) < 0.5)
    }

    @Test func quantizedBlocksWithoutScalesAreRefusedByName() throws {
        let dir = temporaryDirectory()
        let values = [Int8](repeating: 1, count: 64)
        try values.withUnsafeBytes { bytes in
            try SafeTensorsWriter.write([.init(name: "w", dtype: .i8, shape: [2, 32], bytes: bytes)], to: dir.appendingPathComponent("q.safetensors"))
        }
        let store = try WeightStore(files: [dir.appendingPathComponent("q.safetensors").path])
        #expect(throws: WeightError.self) { try store.matrix("w", shape: [2, 32]) }
        do { _ = try store.matrix("w", shape: [2, 32]) } catch {
            #expect((error as? LocalizedError)?.errorDescription?.contains("'w.scales'") == true)
        }
        do { _ = try store.tensor("w") } catch {
            #expect((error as? LocalizedError)?.errorDescription?.contains("weight matrix") == true)
        }
    }

    /// Stored matrices (q4_0, f16, f32) are copied out of the mapping (into huge pages) unchanged,
    /// and the mapping's pages behind the copy are released without losing the file's contents.
    @Test func residentMatricesAreExactCopiesOutOfTheMapping() throws {
        var generator = SplitMix64(seed: 7)
        let rows = 40, columns = 32 * 1024  // float32 5 MiB: the copy goes by 4 MiB chunks and releases pages
        let weights = Tensor(zeros: [rows, columns])
        generator.fillUniform(weights.data, count: weights.count, bound: 1)
        let dir = temporaryDirectory(), path = dir.appendingPathComponent("w.safetensors").path
        let q4 = try WeightMatrix.converting(weights, to: .q4_0), half = try WeightMatrix.converting(weights, to: .f16)
        let valueBytes = WeightMatrix.valueBytes(.q4_0, rows: rows, columns: columns), scaleBytes = rows * columns / 32 * 2
        try SafeTensorsWriter.write([
            .init(name: "q", dtype: .u8, shape: [rows, columns / 2], bytes: UnsafeRawBufferPointer(start: q4.data, count: valueBytes)),
            .init(name: "q.scales", dtype: .f16, shape: [rows, columns / 32], bytes: UnsafeRawBufferPointer(start: q4.scales, count: scaleBytes)),
            .init(name: "h", dtype: .f16, shape: [rows, columns], bytes: UnsafeRawBufferPointer(start: half.data, count: rows * columns * 2)),
            .init(name: "f", dtype: .f32, shape: [rows, columns], bytes: UnsafeRawBufferPointer(start: weights.data, count: rows * columns * 4)),
        ], to: URL(fileURLWithPath: path))
        let store = try WeightStore(files: [path])
        let x = Tensor(zeros: [1, columns])
        generator.fillUniform(x.data, count: columns, bound: 1)
        for name in ["q", "h", "f"] {
            let resident = try store.resident(store.matrix(name, shape: [rows, columns]), named: name)
            let borrowed = try store.matrix(name, shape: [rows, columns])  // read again after the release
            #expect(resident.data != borrowed.data && resident.format == borrowed.format, "\(name)")
            let bytes = WeightMatrix.valueBytes(resident.format, rows: rows, columns: columns)
            #expect(memcmp(resident.data, borrowed.data, bytes) == 0, "\(name): values")
            if let a = resident.scales, let b = borrowed.scales { #expect(memcmp(a, b, scaleBytes) == 0, "\(name): scales") }
            let ours = Tensor(zeros: [1, rows]), theirs = Tensor(zeros: [1, rows])
            resident.apply(x, bias: nil, into: ours); borrowed.apply(x, bias: nil, into: theirs)
            #expect(ours.toArray() == theirs.toArray(), "\(name): products")
        }
    }

    @Test func quantizingAHalfCheckpointKeepsKeptMatricesAsStored() throws {
        let fixture = try LLaVAFixture("llava-qwen2")
        let checkpoint = try Self.halfCheckpoint(fixture, .f16)
        let imported = temporaryDirectory()
        let result = try CheckpointImporter(checkpoint: checkpoint, outputDirectory: imported).run()
        var catalog = Catalog()
        try catalog.load(directory: imported)
        let names = try WeightStore(files: [checkpoint.appendingPathComponent("model.safetensors").path]).tensorNames
        let keptName = try #require(names.first { $0.hasSuffix("layers.0.self_attn.q_proj.weight") })
        let quantizedName = try #require(names.first { $0.hasSuffix("layers.0.mlp.down_proj.weight") })
        var quantizer = Quantizer(catalog: catalog, families: BuiltinFamilies.registry())
        quantizer.keep = [keptName]
        let out = temporaryDirectory()
        let written = try quantizer.quantize(try #require(result.assembly), to: .q8_0, output: out)
        #expect(written.keptMatrices.contains(keptName))
        let files = try FileManager.default.contentsOfDirectory(atPath: out.path).filter { $0.hasSuffix(".safetensors") }
        let store = try WeightStore(files: files.map { out.appendingPathComponent($0).path })
        // "As they are": the kept matrix is still float16, not widened on the way.
        #expect(store.info(keptName)?.dtype == .f16)
        #expect(store.info(quantizedName)?.dtype == .i8)
    }

    @Test func loadingReportsStoredBytesAsTheyAreRead() throws {
        var generator = SplitMix64(seed: 5)
        let weights = Tensor(zeros: [4, 64])
        generator.fillUniform(weights.data, count: weights.count, bound: 1)
        let q8 = try WeightMatrix.converting(weights, to: .q8_0)
        let dir = temporaryDirectory(), path = dir.appendingPathComponent("w.safetensors").path
        try SafeTensorsWriter.write([
            .init(name: "norm", dtype: .f32, shape: [64], bytes: UnsafeRawBufferPointer(start: weights.data, count: 64 * 4)),
            .init(name: "m", dtype: .i8, shape: [4, 64], bytes: q8.valueBytes),
            .init(name: "m.scales", dtype: .f16, shape: [4, 2], bytes: try #require(q8.scaleBytes)),
        ], to: URL(fileURLWithPath: path))
        let store = try WeightStore(files: [path])
        #expect(store.byteCount == 64 * 4 + 4 * 64 + 8 * 2)
        let loader = ParameterLoader(source: .store(store), reference: WeightsReference(files: [path]), storedMatrices: .resident)
        var reports: [(Int, Int)] = []
        loader.onProgress = { reports.append(($0, $1)) }
        _ = try loader.scoped("").tensor("norm", shape: [64])  // a scoped loader reports to the same callback
        _ = try loader.matrix("m", shape: [4, 64])
        #expect(reports.map(\.0) == [256, 256 + 256 + 16] && reports.allSatisfy { $0.1 == store.byteCount })
        // The lines: none within the interval, then the label and megabytes.
        var lines: [String] = []
        let quiet = ByteProgress("loading x", report: { lines.append($0) }, interval: 3600)
        quiet(done: 1, total: 2)
        let every = ByteProgress("loading x", report: { lines.append($0) }, interval: 0)
        every(done: 420_000_000, total: 988_000_000)
        #expect(lines == ["loading x: 420 of 988 MB"])
    }

    @Test func storedMatricesSayWhereAMatrixLives() throws {
        var generator = SplitMix64(seed: 11)
        let rows = 8, columns = 64
        let weights = Tensor(zeros: [rows, columns])
        generator.fillUniform(weights.data, count: weights.count, bound: 1)
        let half = try WeightMatrix.converting(weights, to: .f16)
        let dir = temporaryDirectory(), path = dir.appendingPathComponent("w.safetensors").path
        try SafeTensorsWriter.write([
            .init(name: "h", dtype: .f16, shape: [rows, columns], bytes: UnsafeRawBufferPointer(start: half.data, count: rows * columns * 2)),
        ], to: URL(fileURLWithPath: path))
        let store = try WeightStore(files: [path])
        let inMapping = try store.matrix("h", shape: [rows, columns]).data
        func load(_ placement: StoredMatrices) throws -> WeightMatrix {
            try ParameterLoader(source: .store(store), reference: WeightsReference(files: [path]), storedMatrices: placement)
                .matrix("h", shape: [rows, columns])
        }
        let mapped = try load(.mapped), resident = try load(.resident), widened = try load(.widened)
        #expect(mapped.format == .f16 && mapped.data == inMapping)
        #expect(resident.format == .f16 && resident.data != inMapping)
        #expect(memcmp(resident.data, inMapping, rows * columns * 2) == 0)
        #expect(widened.format == .f32 && widened.widened().toArray() == half.widened().toArray())
        // A conversion makes its own matrix whatever the placement.
        let converted = try ParameterLoader(source: .store(store), reference: WeightsReference(files: [path]), matrixFormat: .q8_0,
                                            storedMatrices: .mapped).matrix("h", shape: [rows, columns])
        #expect(converted.format == .q8_0)
    }

    @Test func benchmarkRunsATinySyntheticModelAndNamesMissingFamilies() throws {
        let catalog = try Catalog.standard()
        let (encoder, llm) = try SyntheticPreset.named("tiny").manifests(catalog)
        var kvBytes: [WeightFormat: Int] = [:]
        for format in WeightFormat.allCases {
            var bench = Benchmark(families: BuiltinFamilies.registry(), format: format)
            bench.promptTokens = 20
            bench.decodeTokens = 3
            bench.measureBandwidth = format == .q4_0  // a 512 MiB probe: once is enough here
            bench.kvCache = format == .bf16 ? .f16 : .f32
            let report = try bench.run(name: "tiny", encoder: encoder, languageModel: llm)
            kvBytes[format] = report.kvCacheBytes
            #expect(report.kvCache == bench.kvCache.rawValue)
            #expect(((report.decodeBandwidthFraction ?? 0) > 0) == bench.measureBandwidth)
            #expect(((report.readBandwidthGBPerSecond ?? 0) > 0) == bench.measureBandwidth)
            #expect(report.finiteLogits)
            #expect(report.imageEncodeSeconds != nil && report.decodeTokensPerSecond != nil)
            #expect(report.weightBytes > 0 && report.kvCacheBytes > 0)
            // Decoded tokens read 21, 22 and 23 cached positions of the 23 (31 with the probes' 8
            // pairs) the cache holds, stored as one key panel of 32 positions: 22 on average.
            #expect(report.decodeKVBytesPerToken == report.kvCacheBytes / 32 * 22)
            #expect(report.decodeBytesPerToken! > report.decodeKVBytesPerToken!)
            // Every matrix in the asked format, or kept as stored (f32) where its width is not whole blocks.
            #expect((report.matrixFormats[format.rawValue] ?? 0) > 0 && Set(report.matrixFormats.keys).isSubset(of: [format.rawValue, "f32"]),
                    "\(report.matrixFormats)")
        }
        #expect(kvBytes[.bf16]! * 2 == kvBytes[.f32]!)  // the float16 cache
        // Every preset names components the catalog has, of families this build registers.
        let registry = BuiltinFamilies.registry()
        for preset in SyntheticPreset.all {
            let (e, l) = try preset.manifests(catalog)
            for manifest in [e, l].compactMap({ $0 }) { #expect(registry.families[manifest.family] != nil, "\(preset.name)") }
        }
        // A family this build lacks is named as such.
        let empty = FamilyRegistry()
        #expect(throws: BenchmarkError.self) { try Benchmark(families: empty, format: nil).run(name: "tiny", encoder: nil, languageModel: llm) }
        #expect(throws: BenchmarkError.self) { try SyntheticPreset.named("gpt-5") }
        // A run longer than the context is refused before its prefill, naming the parts of the count.
        var long = Benchmark(families: registry, format: .q8_0)
        long.promptTokens = 480  // + 32 + 8 past the tiny model's 512
        #expect {
            try long.run(name: "tiny", encoder: nil, languageModel: llm)
        } throws: { error in
            (error as? LocalizedError)?.errorDescription?.contains("480 prompt tokens + 32 decoded + 8 paired with the bandwidth probes need more positions than") == true
        }
        // Without a prompt length the default 640 shrinks to what fits beside the decoded tokens.
        var fitted = Benchmark(families: registry, format: .q8_0)
        fitted.measureBandwidth = false
        fitted.decodeTokens = 2
        #expect(try fitted.run(name: "tiny", encoder: nil, languageModel: llm).promptTokens == 510)
    }
}
