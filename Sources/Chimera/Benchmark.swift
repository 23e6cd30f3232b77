import ChimeraTensor
import Foundation
#if canImport(Glibc)
import Glibc
#endif

// `chimera bench`: times an encoder and a language model on real shapes, with weights from a
// checkpoint or random ones (`WeightSource.random`) so that no download is needed.

/// A synthetic model: catalog components of a real architecture, run with random weights of
/// their dimensions (the catalog's manifests hold the dimensions; no download is needed).
public struct SyntheticPreset: Sendable {
    public let name: String
    public let encoder: String?
    public let languageModel: String?

    public static let all: [SyntheticPreset] = [
        SyntheticPreset(name: "tinyllama-1.1b", encoder: nil, languageModel: "tinyllama-1.1b-chat"),
        SyntheticPreset(name: "qwen2-0.5b", encoder: nil, languageModel: "qwen2-0.5b"),
        SyntheticPreset(name: "phi-2", encoder: nil, languageModel: "phi-2"),
        SyntheticPreset(name: "stablelm-2-1.6b", encoder: nil, languageModel: "stablelm-2-1_6b"),
        SyntheticPreset(name: "gemma-2b", encoder: nil, languageModel: "gemma-2b"),
        SyntheticPreset(name: "clip-vit-l-336", encoder: "clip-vit-large-patch14-336", languageModel: nil),
        SyntheticPreset(name: "siglip-so400m-384", encoder: "siglip-so400m-patch14-384", languageModel: nil),
        SyntheticPreset(name: "tinyllava-1.5b", encoder: "tinyllava-tinyllama-siglip-1.5b-vision",
                        languageModel: "tinyllava-tinyllama-siglip-1.5b-llm"),
        // The embedded tiny default: small enough for tests (checks the path, not speed).
        SyntheticPreset(name: "tiny", encoder: "chimera-tiny-default-vision", languageModel: "chimera-tiny-default-llm"),
    ]

    public static func named(_ name: String) throws -> SyntheticPreset {
        guard let preset = all.first(where: { $0.name == name }) else {
            throw BenchmarkError.unknownPreset(name: name, known: all.map(\.name))
        }
        return preset
    }

    /// The preset's manifests from a catalog.
    public func manifests(_ catalog: Catalog) throws -> (encoder: ComponentManifest?, languageModel: ComponentManifest?) {
        (try encoder.map { try catalog.component($0, kind: .encoder) }, try languageModel.map { try catalog.component($0, kind: .languageModel) })
    }
}

public enum BenchmarkError: LocalizedError {
    case unknownPreset(name: String, known: [String])
    case familyNotAvailable(part: String, family: String, available: [String])
    case nothingToRun
    case wrongComponent(id: String, expected: String)
    case beyondContext(model: String, prompt: Int, decode: Int, pairs: Int, context: Int)

    public var errorDescription: String? {
        switch self {
        case let .unknownPreset(name, known):
            return "unknown synthetic preset '\(name)' (known: \(known.joined(separator: ", ")))"
        case let .familyNotAvailable(part, family, available):
            return "\(part) needs the '\(family)' family, which is not available in this build (available: \(available.joined(separator: ", ")))"
        case .nothingToRun: return "nothing to benchmark: no encoder and no language model"
        case let .wrongComponent(id, expected): return "component '\(id)' is not \(expected)"
        case let .beyondContext(model, prompt, decode, pairs, context):
            return "\(prompt) prompt tokens + \(decode) decoded" + (pairs > 0 ? " + \(pairs) paired with the bandwidth probes" : "")
                + " need more positions than \(model)'s context of \(context)"
        }
    }
}

/// What `chimera bench` prints.
public struct BenchmarkReport: Codable, Sendable {
    public var model: String
    public var weightDType: String
    /// Where stored matrices that are not converted live while they run (StoredMatrices: "resident"
    /// or "mapped"); nil for random weights.
    public var storedMatrices: String?
    public var threads: Int
    public var cpuFeatures: String
    public var kernels: String
    /// The product bf16 matrices' GEMMs take here: "bf16-dot" (AVX-512 BF16 dot products, where
    /// they run at the FMAs' rate) or "float" (the float32 micro-kernel).
    public var bf16GEMM: String
    public var blasCore: String
    public var weightBytes: Int
    /// How many weight matrices each format holds (with `--dtype q4_0` a tied lm_head is q6_0, and
    /// matrices whose width is not a multiple of 32 stay as stored).
    public var matrixFormats: [String: Int] = [:]
    /// Seconds spent building the parts: reading the weights (and copying or converting them), or
    /// generating random ones for a synthetic model.
    public var loadSeconds: Double = 0
    public var kvCacheBytes: Int
    /// The KV cache's precision (f32 or f16), when a language model ran.
    public var kvCache: String?
    /// How decoded tokens were chosen ("greedy", or the sampling options), when a language model ran.
    public var sampling: String?
    /// Mean time of choosing a decoded token from its logits (argmax or the sampler), in seconds.
    public var decodeSamplingSeconds: Double?
    /// Median of the encodes after the first (the only one when a single run was asked for).
    public var imageEncodeSeconds: Double?
    public var imageEncodeFirstSeconds: Double?
    public var imageEncodeRuns: Int?
    public var promptTokens: Int?
    public var prefillSeconds: Double?
    public var prefillTokensPerSecond: Double?
    public var timeToFirstTokenSeconds: Double?
    public var decodeTokens: Int?
    public var decodeTokensPerSecond: Double?
    public var peakRSSBytes: Int
    /// peak RSS / (weight bytes + KV cache bytes)
    public var peakRSSRatio: Double
    /// Bytes read per decoded token / decode step time: the read bandwidth decoding reaches.
    public var decodeBandwidthGBPerSecond: Double?
    /// Bytes one decoded token reads: every matrix once (lm_head and a tied embedding table
    /// included) plus the cached keys and values attention reads, averaged over the decoded tokens.
    public var decodeBytesPerToken: Int?
    /// The KV-cache part of decodeBytesPerToken.
    public var decodeKVBytesPerToken: Int?
    /// This machine's main-memory read bandwidth on the same threads (the median of the probes),
    /// and the share of it decode reaches: the median, over pairs of a probe and the token
    /// decoded right after it, of the token's GB/s over the probe's.
    public var readBandwidthGBPerSecond: Double?
    public var decodeBandwidthFraction: Double?
    /// Every probe's GB/s and every pair's share, in order (how steady the machine was).
    public var readBandwidthProbesGBPerSecond: [Double]?
    public var decodeBandwidthPairShares: [Double]?
    /// Whether the first decoded tokens were computed from finite logits (a sanity check).
    public var finiteLogits: Bool

    enum CodingKeys: String, CodingKey {
        case model, threads, kernels
        case blasCore = "blas_core", bf16GEMM = "bf16_gemm"
        case weightDType = "weight_dtype", storedMatrices = "stored_matrices", cpuFeatures = "cpu_features", weightBytes = "weight_bytes"
        case matrixFormats = "matrix_formats"
        case loadSeconds = "load_s"
        case kvCacheBytes = "kv_cache_bytes", kvCache = "kv_cache", sampling, decodeSamplingSeconds = "decode_sampling_s", imageEncodeSeconds = "image_encode_s", promptTokens = "prompt_tokens"
        case prefillSeconds = "prefill_s", prefillTokensPerSecond = "prefill_tokens_per_s"
        case timeToFirstTokenSeconds = "time_to_first_token_s", decodeTokens = "decode_tokens"
        case decodeTokensPerSecond = "decode_tokens_per_s", peakRSSBytes = "peak_rss_bytes", peakRSSRatio = "peak_rss_ratio"
        case decodeBandwidthGBPerSecond = "decode_bandwidth_gb_per_s", finiteLogits = "finite_logits"
        case imageEncodeFirstSeconds = "image_encode_first_s", imageEncodeRuns = "image_encode_runs"
        case decodeBytesPerToken = "decode_bytes_per_token", decodeKVBytesPerToken = "decode_kv_bytes_per_token"
        case readBandwidthGBPerSecond = "read_bandwidth_gb_per_s"
        case decodeBandwidthFraction = "decode_bandwidth_fraction"
        case readBandwidthProbesGBPerSecond = "read_bandwidth_probes_gb_per_s"
        case decodeBandwidthPairShares = "decode_bandwidth_pair_shares"
    }
}

public struct Benchmark {
    public var families: FamilyRegistry
    /// Format of every weight matrix (nil: as stored; random weights default to f32).
    public var format: WeightFormat?
    /// Weights of a part: nil uses random weights of the manifest's shapes.
    public var store: ((ComponentManifest) throws -> WeightSource)?
    /// Prefill length; nil: `defaultPromptTokens`, or as many as fit the context beside the decoded
    /// (and bandwidth-paired) tokens, for a model with a short context such as the tiny default.
    public var promptTokens: Int?
    /// One CLIP-336 image (576 tokens) plus a question.
    public static let defaultPromptTokens = 640
    /// Image encodes to time: the first apart, the median of the rest as `image_encode_s`.
    public var encodeRuns = 3
    /// Compare decode with the machine's read bandwidth: `bandwidthPairs` more decoded tokens,
    /// each right after a read of a 512 MiB buffer (a second or two in all).
    public var measureBandwidth = true
    public var bandwidthPairs = 8
    public var decodeTokens = 32
    public var kvCache = KVPrecision.f32
    /// How decoded tokens are chosen (greedy by default; a sampled decode includes the sampler's time).
    public var sampling = GenerationOptions()
    /// What becomes of matrices a `store` holds and `format` does not convert.
    public var storedMatrices = StoredMatrices.resident
    public var progress: (String) -> Void = { _ in }

    public init(families: FamilyRegistry, format: WeightFormat?) {
        self.families = families; self.format = format
    }

    /// Builds a part; its weight bytes and the seconds its loading took (reading, copying or
    /// generating and converting the weights) go into the report.
    func load(_ manifest: ComponentManifest, part: String, report: inout BenchmarkReport) throws -> (any Component, ParameterLoader) {
        let start = Date()
        defer { report.loadSeconds += Date().timeIntervalSince(start) }
        guard let family = families.families[manifest.family] else {
            throw BenchmarkError.familyNotAvailable(part: part, family: manifest.family,
                                                   available: families.families.keys.sorted())
        }
        let source = try store?(manifest) ?? .random(seed: 1, scale: 0.02)
        let loader = ParameterLoader(source: source, reference: manifest.weights ?? WeightsReference(files: ["(none)"]),
                                     matrixFormat: format, storedMatrices: storedMatrices)
        loader.reportLoading(manifest.id, to: progress)
        let component = try family.create(manifest, ComponentBuildContext(weights: loader))
        report.weightBytes += loader.weightBytes
        var seen = Set<String>()
        for (name, matrix) in loader.matrices where seen.insert(name).inserted { report.matrixFormats[matrix.format.rawValue, default: 0] += 1 }
        return (component, loader)
    }

    public func run(name: String, encoder encoderManifest: ComponentManifest?, languageModel llmManifest: ComponentManifest?) throws -> BenchmarkReport {
        guard encoderManifest != nil || llmManifest != nil else { throw BenchmarkError.nothingToRun }
        try sampling.validate()
        var report = BenchmarkReport(
            model: name, weightDType: format?.rawValue ?? "as stored", threads: ComputeThreads.current,
            cpuFeatures: ComputeThreads.cpuFeatures, kernels: ComputeThreads.kernelVariant,
            bf16GEMM: ComputeThreads.bf16GEMM, blasCore: ComputeThreads.blasCore,
            weightBytes: 0, kvCacheBytes: 0, peakRSSBytes: 0, peakRSSRatio: 0, finiteLogits: true)
        if store != nil { report.storedMatrices = storedMatrices.rawValue }
        var elapsed = 0.0
        if let manifest = encoderManifest {
            progress("loading encoder \(manifest.id) (\(manifest.family))")
            let (component, _) = try load(manifest, part: "encoder '\(manifest.id)'", report: &report)
            guard let encoder = component as? any ModalityEncoder else { throw BenchmarkError.wrongComponent(id: manifest.id, expected: "an encoder") }
            guard let preprocess = manifest.preprocess else { throw BenchmarkError.wrongComponent(id: manifest.id, expected: "an image encoder") }
            let size = preprocess.cropSize ?? preprocess.size
            var generator = SplitMix64(seed: 7)
            let pixels = Tensor(shape: [3, size, size], values: (0..<(3 * size * size)).map { _ in generator.uniform(1) })
            // The first encode also pays first-touch costs (scratch pages, thread start-up); the
            // report gives it apart and the median of the others, as a warmed-up server would see.
            var times: [Double] = []
            var features = Tensor(zeros: [0, 0])
            for run in 1...max(1, encodeRuns) {
                progress("encoding one \(size)×\(size) image (\(run) of \(max(1, encodeRuns)))")
                let start = Date()
                features = try encoder.hiddenState(pixels, layer: -1)
                times.append(Date().timeIntervalSince(start))
            }
            report.imageEncodeFirstSeconds = times[0]
            report.imageEncodeSeconds = Self.median(times.count > 1 ? Array(times.dropFirst()) : times)
            report.imageEncodeRuns = times.count
            elapsed += times[0]
            report.finiteLogits = report.finiteLogits && features.toArray().allSatisfy(\.isFinite)
        }
        if let manifest = llmManifest {
            progress("loading language model \(manifest.id) (\(manifest.family))")
            let (component, loader) = try load(manifest, part: "language model '\(manifest.id)'", report: &report)
            guard let model = component as? any LanguageModel else { throw BenchmarkError.wrongComponent(id: manifest.id, expected: "a language model") }
            // A decoded token multiplies by every matrix once (a tied embedding table is one of them).
            let decodeBytes = loader.matrices.reduce(0) { $0 + $1.matrix.byteCount }
            let pairs = measureBandwidth && decodeTokens > 0 ? bandwidthPairs : 0
            let promptTokens = self.promptTokens ?? max(1, min(Self.defaultPromptTokens, model.contextLength - pairs - decodeTokens))
            // Before the prefill, not after; not as a sum, which a huge --decode-tokens would overflow.
            guard promptTokens <= model.contextLength - pairs, decodeTokens <= model.contextLength - pairs - promptTokens else {
                throw BenchmarkError.beyondContext(model: manifest.id, prompt: promptTokens, decode: decodeTokens, pairs: pairs,
                                                   context: model.contextLength)
            }
            let cache = model.makeCache(capacity: promptTokens + decodeTokens + pairs, precision: kvCache)
            report.kvCache = kvCache.rawValue
            report.kvCacheBytes = cache.bytes
            // A token at `position` reads the matrices and the cached keys and values of
            // position + 1 positions (in the cache's precision).
            let kvBytesPerPosition = cache.layers.reduce(0) { $0 + 2 * $1.width * $1.precision.bytes }
            let promptIDs = (0..<promptTokens).map { ($0 * 7919 + 1) % model.vocabularySize }
            let prompt = try model.embed(promptIDs)
            progress("prefill of \(promptTokens) tokens")
            var sampler = Sampler(options: sampling)
            sampler.saw(promptIDs)
            report.sampling = sampling.samplingDescription
            var start = Date()
            var logits = try model.forward(embeddings: prompt, cache: cache, lastOnly: true)
            var token = sampler.sample(logits)
            let prefill = Date().timeIntervalSince(start)
            report.promptTokens = promptTokens
            report.prefillSeconds = prefill
            report.prefillTokensPerSecond = Double(promptTokens) / prefill
            report.timeToFirstTokenSeconds = elapsed + prefill
            report.finiteLogits = report.finiteLogits && logits.toArray().allSatisfy(\.isFinite)
            let row = Tensor(zeros: [1, model.hiddenSize])
            var samplingSeconds = 0.0
            func decodeOne() throws {
                try model.embed(token: token, into: row)
                logits = try model.forward(embeddings: row, cache: cache, lastOnly: true)
                let chosen = Date()
                token = sampler.sample(logits)
                samplingSeconds += Date().timeIntervalSince(chosen)
            }
            progress("decoding \(decodeTokens) tokens")
            start = Date()
            for _ in 0..<decodeTokens { try decodeOne() }
            let decode = Date().timeIntervalSince(start)
            report.decodeTokens = decodeTokens
            if decodeTokens > 0 {
                let meanPositions = Double(promptTokens) + Double(decodeTokens + 1) / 2
                let kvBytes = Int(Double(kvBytesPerPosition) * meanPositions)
                report.decodeTokensPerSecond = Double(decodeTokens) / decode
                report.decodeSamplingSeconds = samplingSeconds / Double(decodeTokens)
                report.decodeKVBytesPerToken = kvBytes
                report.decodeBytesPerToken = decodeBytes + kvBytes
                report.decodeBandwidthGBPerSecond = Double(decodeBytes + kvBytes) * report.decodeTokensPerSecond! / 1e9
            }
            report.peakRSSBytes = Self.peakRSS()
            // After the peak RSS is read: the probe's own buffer must not count. On a shared
            // machine the bandwidth moves by tens of percent between moments, so one measurement
            // after the decode can flatter or wrong it; instead each probe is followed at once by
            // one more decoded token, and the share is the median of these pairs' ratios. The
            // probe also evicts the caches, so the token reads its weights from memory.
            if pairs > 0, let probe = ReadBandwidthProbe() {
                progress("pairing \(pairs) decoded tokens with memory read-bandwidth probes")
                var rates: [Double] = [], shares: [Double] = []
                for pair in 0..<pairs {
                    let rate = probe.measure()
                    start = Date()
                    try decodeOne()
                    let seconds = Date().timeIntervalSince(start)
                    let bytes = decodeBytes + kvBytesPerPosition * (promptTokens + decodeTokens + pair + 1)
                    rates.append(rate)
                    shares.append(Double(bytes) / seconds / 1e9 / rate)
                }
                report.readBandwidthGBPerSecond = Self.median(rates)
                report.decodeBandwidthFraction = Self.median(shares)
                report.readBandwidthProbesGBPerSecond = rates
                report.decodeBandwidthPairShares = shares
            }
        }
        if llmManifest == nil { report.peakRSSBytes = Self.peakRSS() }
        report.peakRSSRatio = Double(report.peakRSSBytes) / Double(max(1, report.weightBytes + report.kvCacheBytes))
        return report
    }

    /// The middle value (the upper one of an even count).
    static func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }

    /// Peak resident set size of this process, in bytes: VmHWM, which starts afresh at exec
    /// (getrusage's ru_maxrss carries the parent's size over a fork, e.g. a Python driver's).
    public static func peakRSS() -> Int {
        if let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
           let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
           let kilobytes = Int(line.split(separator: " ").dropFirst().first ?? "") {
            return kilobytes * 1024
        }
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return usage.ru_maxrss * 1024  // Linux reports kilobytes
    }
}
