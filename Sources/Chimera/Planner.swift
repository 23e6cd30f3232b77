import Foundation
import ChimeraTensor

// Memory planning without weights: every component is built over shapes-only tensors (zero pages
// that cost nothing), so parameter counts come from the families' own code, not from a formula
// that could drift from it.

/// A weight format, by its cost per parameter.
public enum Precision: String, Codable, Sendable, CaseIterable {
    case f32, f16, int8, int4

    /// Bytes per parameter; int8 and int4 carry one f16 scale per group of 32 weights.
    public var bytesPerParameter: Double {
        switch self {
        case .f32: return 4
        case .f16: return 2
        case .int8: return 1 + 2.0 / 32
        case .int4: return 0.5 + 2.0 / 32
        }
    }
}

/// A place a model may have to fit.
public struct MemoryDevice: Codable, Sendable, Equatable {
    public var name: String
    public var memoryBytes: Int
    public init(name: String, memoryBytes: Int) { self.name = name; self.memoryBytes = memoryBytes }
    enum CodingKeys: String, CodingKey { case name, memoryBytes = "memory_bytes" }

    static func gib(_ name: String, _ n: Int) -> MemoryDevice { MemoryDevice(name: name, memoryBytes: n << 30) }

    public static let gpus: [MemoryDevice] = [
        gib("RTX 4090", 24), gib("RTX 4080", 16), gib("RTX 4070 Ti", 12), gib("RTX 3090", 24), gib("RTX 3070", 8),
        gib("RTX A6000", 48), gib("TITAN RTX", 24), gib("RTX 2080 Ti", 11), gib("Quadro RTX 8000", 48),
    ]

    /// This machine's RAM.
    public static var thisMachine: MemoryDevice {
        MemoryDevice(name: "this machine (RAM)", memoryBytes: Int(ProcessInfo.processInfo.physicalMemory))
    }
}

public struct MemoryPlan: Codable, Sendable {
    public struct Part: Codable, Sendable {
        public var id: String
        public var kind: String
        public var family: String
        public var parameters: Int
    }
    public struct Fit: Codable, Sendable {
        public var device: MemoryDevice
        /// Precision → whether the peak estimate fits in `usable` of the device's memory.
        public var fits: [String: Bool]
    }

    public var subject: String
    public var parts: [Part]
    public var totalParameters: Int
    /// Tokens of context the KV cache and activations are planned for.
    public var contextTokens: Int
    /// The KV cache's precision planned for (`generate`'s and `bench`'s `--kv-cache`), whatever the weights'.
    public var kvCache: KVPrecision
    public var weightBytes: [String: Int]
    /// Key/value cache per 1,024 tokens of context (0 without a language model).
    public var kvCacheBytesPer1kTokens: [String: Int]
    /// Largest f32 working set of one forward pass (encoder, or language-model prefill over the context).
    public var activationBytes: Int
    /// weights + KV cache for the context + activations.
    public var peakBytes: [String: Int]
    public var fits: [Fit]

    /// Share of a device's memory a plan may use: the rest is left to the runtime (CUDA context,
    /// allocator fragmentation, the operating system).
    public static let usable = 0.9

    enum CodingKeys: String, CodingKey {
        case subject, parts, fits
        case totalParameters = "total_parameters", contextTokens = "context_tokens", weightBytes = "weight_bytes", kvCache = "kv_cache"
        case kvCacheBytesPer1kTokens = "kv_cache_bytes_per_1k_tokens", activationBytes = "activation_bytes", peakBytes = "peak_bytes"
    }
}

public enum PlanError: LocalizedError {
    case unsettledWidth(connector: String)
    case badContext(Int)
    case contextBeyondModel(context: Int, model: String, limit: Int)
    /// A context too short for one item of each input (what any prompt with them needs).
    case contextBelowInputs(context: Int, tokens: Int, inputs: [String])
    public var errorDescription: String? {
        switch self {
        case let .unsettledWidth(connector):
            return "connector '\(connector)' has width \"auto\": plan an assembly that uses it, which settles its widths"
        case let .badContext(n): return "--context must be positive, found \(n)"
        case let .contextBeyondModel(context, model, limit):
            return "--context \(context) is longer than language model '\(model)' can attend over (its context length is \(limit))"
        case let .contextBelowInputs(context, tokens, inputs):
            return "--context \(context) cannot hold the assembly's inputs: one of each takes \(tokens) tokens (\(inputs.joined(separator: ", "))) "
                + "and a prompt needs at least one more; plan for --context \(tokens + 1) or more"
        }
    }
}

public struct Planner: Sendable {
    public let catalog: Catalog
    public let families: FamilyRegistry
    public var devices: [MemoryDevice]

    /// The context planned for when none is given: the language model's, capped at TinyLLaVA's
    /// usual tokenizer_model_max_length.
    public static let defaultContextCap = 2048

    public init(catalog: Catalog, families: FamilyRegistry, devices: [MemoryDevice] = MemoryDevice.gpus + [MemoryDevice.thisMachine]) {
        self.catalog = catalog; self.families = families; self.devices = devices
    }

    /// A plan for an assembly or for a single component, by id.
    public func plan(_ id: String, context: Int? = nil, kvCache: KVPrecision = .f32) throws -> MemoryPlan {
        if let assembly = catalog.assemblies[id] { return try plan(assembly: assembly, context: context, kvCache: kvCache) }
        return try plan(component: try catalog.component(id), context: context, kvCache: kvCache)
    }

    public func plan(assembly: AssemblyManifest, context: Int? = nil, kvCache: KVPrecision = .f32) throws -> MemoryPlan {
        // A misfit is refused as generate refuses it (the connector below is built to the widths
        // the assembly needs, which would hide one).
        let checker = CompatibilityChecker(catalog: catalog, families: families)
        try checker.requireFit(assembly)
        let lmManifest = try catalog.component(assembly.languageModel, kind: .languageModel)
        guard let lm = try families.build(lmManifest, substitute: .shapesOnly) as? any LanguageModel else {
            throw AssemblyError.incompatible(assembly: assembly.id, problems: ["'\(lmManifest.id)' did not build a language model"])
        }
        var built: [any Component] = [lm]
        var activations: [Int] = []
        var inputTokens: [String] = [], inputTokenCount = 0
        for (i, binding) in assembly.inputs.enumerated() {
            let encoderManifest = try catalog.component(binding.encoder, kind: .encoder)
            guard let encoder = try families.build(encoderManifest, substitute: .shapesOnly) as? any ModalityEncoder else {
                throw AssemblyError.incompatible(assembly: assembly.id, problems: ["'\(encoderManifest.id)' did not build an encoder"])
            }
            let connector = try families.build(try catalog.component(binding.connector, kind: .connector),
                                               inputWidth: encoder.output.width, outputWidth: lm.hiddenSize, substitute: .shapesOnly)
            built += [encoder, connector]
            activations.append(Self.encoderActivations(encoder))
            if let tokens = try checker.inputRows(binding) {
                inputTokens.append("inputs[\(i)] '\(binding.placeholder)': \(tokens)")
                inputTokenCount += tokens
            }
        }
        if let context, context >= 1, context <= inputTokenCount {
            throw PlanError.contextBelowInputs(context: context, tokens: inputTokenCount, inputs: inputTokens)
        }
        return try plan(subject: assembly.id, built: built, languageModel: lm, extraActivations: activations, context: context,
                        kvCache: kvCache)
    }

    public func plan(component manifest: ComponentManifest, context: Int? = nil, kvCache: KVPrecision = .f32) throws -> MemoryPlan {
        if manifest.kind == .connector, manifest.inputWidth?.value == nil || manifest.outputWidth?.value == nil {
            throw PlanError.unsettledWidth(connector: manifest.id)
        }
        let component = try families.build(manifest, substitute: .shapesOnly)
        let encoderActivations = (component as? any ModalityEncoder).map { [Self.encoderActivations($0)] } ?? []
        return try plan(subject: manifest.id, built: [component], languageModel: component as? any LanguageModel,
                        extraActivations: encoderActivations, context: context, kvCache: kvCache)
    }

    func plan(subject: String, built: [any Component], languageModel lm: (any LanguageModel)?,
              extraActivations: [Int], context: Int?, kvCache: KVPrecision) throws -> MemoryPlan {
        if let context, context < 1 { throw PlanError.badContext(context) }
        if let context, let lm, context > lm.contextLength {
            throw PlanError.contextBeyondModel(context: context, model: lm.id, limit: lm.contextLength)
        }
        let parts = built.map {
            MemoryPlan.Part(id: $0.id, kind: $0.manifest.kind.rawValue, family: $0.manifest.family, parameters: $0.parameterCount)
        }
        let total = parts.reduce(0) { $0 + $1.parameters }
        let tokens = context ?? lm.map { min($0.contextLength, Self.defaultContextCap) } ?? 0
        // Cached elements per token: layers × (keys + values) × cache width, as the model's cache keeps them.
        var kvPerToken = 0, prefill = 0
        if let lm {
            let cache = lm.cacheShape  // once: a model without its own builds a cache for it
            kvPerToken = 2 * cache.layers * cache.width
            prefill = Self.prefillActivations(lm, kvWidth: cache.width, tokens: tokens)
        }
        let activations = max(extraActivations.max() ?? 0, prefill)
        var weightBytes: [String: Int] = [:], kvPer1k: [String: Int] = [:], peak: [String: Int] = [:]
        for p in Precision.allCases {
            weightBytes[p.rawValue] = Int((Double(total) * p.bytesPerParameter).rounded(.up))
            kvPer1k[p.rawValue] = kvPerToken * 1024 * kvCache.bytes
            peak[p.rawValue] = weightBytes[p.rawValue]! + kvPerToken * tokens * kvCache.bytes + activations
        }
        let fits = devices.map { device in
            MemoryPlan.Fit(device: device, fits: Dictionary(uniqueKeysWithValues: Precision.allCases.map {
                ($0.rawValue, Double(peak[$0.rawValue]!) <= Double(device.memoryBytes) * MemoryPlan.usable)
            }))
        }
        return MemoryPlan(subject: subject, parts: parts, totalParameters: total, contextTokens: tokens, kvCache: kvCache, weightBytes: weightBytes,
                          kvCacheBytesPer1kTokens: kvPer1k, activationBytes: activations, peakBytes: peak, fits: fits)
    }

    /// f32 working set of one prefill over `tokens`: residual, normed and projected rows, queries and
    /// attention output, keys and values, two MLP rows, one head's scores over the whole sequence,
    /// and the last position's logits (Llama-style families; intermediate_size from the config).
    static func prefillActivations(_ lm: any LanguageModel, kvWidth: Int, tokens: Int) -> Int {
        let h = lm.hiddenSize
        let ffn = lm.manifest.config["intermediate_size"]?.intValue ?? 4 * h
        return 4 * (tokens * (5 * h + 2 * kvWidth + 2 * ffn) + tokens * tokens + lm.vocabularySize)
    }

    /// f32 working set of one encoder pass: the same rows over its tokens.
    static func encoderActivations(_ encoder: any ModalityEncoder) -> Int {
        let t = encoder.output.tokens, w = encoder.output.width
        let ffn = encoder.manifest.config["intermediate_size"]?.intValue ?? 4 * w
        return 4 * (t * (7 * w + 2 * ffn) + t * t)
    }
}
