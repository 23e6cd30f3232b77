import Chimera
import ChimeraTensor
import Foundation

// One decoder-only transformer for every language-model family (Llama, Qwen2, Gemma, Phi, StableLM).
// A family file decodes its config and maps it to a `DecoderArchitecture`; the forward pass here
// reads only that description.

// MARK: - Architecture

public struct DecoderArchitecture: Sendable {
    public enum Norm: Sendable, Equatable {
        /// RMSNorm whose effective weight is (offset + w): offset 1 for Gemma.
        case rms(weightOffset: Float)
        /// LayerNorm with weight and bias (Phi, StableLM).
        case layer
    }
    public enum Residual: Sendable, Equatable {
        /// x += attn(norm1(x)); x += mlp(norm2(x)).
        case sequential
        /// x += attn(norm(x)) + mlp(norm(x)) with one norm (Phi-2, StableLM use_parallel_residual).
        case parallel
    }
    public enum MLP: Sendable, Equatable {
        /// down(act(gate(x)) · up(x)): SwiGLU (Llama, Qwen2, StableLM), GeGLU (Gemma).
        case gated(Activation)
        /// fc2(act(fc1(x))) (Phi).
        case plain(Activation)
    }

    public var hiddenSize: Int
    public var intermediateSize: Int
    public var layers: Int
    public var heads: Int
    public var kvHeads: Int
    public var headDim: Int
    public var vocabSize: Int
    public var norm: Norm
    public var normEps: Float
    public var qkvBias: Bool
    public var outputBias: Bool
    /// Bias-free LayerNorm of each query and key head, one weight per head (StableLM qk_layernorm).
    public var qkNorm: Bool
    public var residual: Residual
    public var mlp: MLP
    public var mlpBias: Bool
    /// Leading dimensions of each head that rotate (partial rotary: Phi-2, StableLM-2).
    public var rotaryDim: Int
    public var ropeTheta: Float
    public var ropeScaling: RotaryScaling = .none
    /// Multiplies the input embeddings: sqrt(hidden_size) for Gemma.
    public var embeddingScale: Float?
    /// Whether `embeddingScale` applies in `forward`, to spliced features too (transformers 4, how
    /// TinyLLaVA-Gemma was trained), or in `embed`, to token embeddings only (transformers 5's
    /// GemmaTextScaledWordEmbedding).
    public var scaleSplicedFeatures = true
    public var tiedEmbeddings: Bool
    public var lmHeadBias: Bool
    /// Stored names that differ between families.
    public var outputProjectionName = "self_attn.o_proj"
    public var finalNormName = "model.norm"
}

/// A family config that describes a decoder-only transformer.
public protocol DecoderFamilyConfig: Decodable, Sendable {
    /// The architecture, or a clear error when the manifest asks for what is not implemented.
    func architecture(for manifest: ComponentManifest) throws -> DecoderArchitecture
}

// MARK: - Shared configuration fields

/// The sizes every family config has, under the same snake_case keys.
public struct DecoderShape: Sendable {
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var layers: Int
    public var heads: Int
    public var kvHeads: Int
    public var headDim: Int?
    public var vocabSize: Int
    public var ropeTheta: Float
    public var ropeScaling: RotaryScaling
    public var tieWordEmbeddings: Bool

    enum CodingKeys: String, CodingKey, CaseIterable {
        case layers, heads
        case hiddenSize = "hidden_size", intermediateSize = "intermediate_size", kvHeads = "kv_heads"
        case headDim = "head_dim", vocabSize = "vocab_size", ropeTheta = "rope_theta", ropeScaling = "rope_scaling"
        case tieWordEmbeddings = "tie_word_embeddings"
    }

    /// Reads the shared fields of a family config; `familyKeys` are the family's own, and any other key is refused.
    init<K: CodingKey & CaseIterable>(from decoder: Decoder, familyKeys: K.Type, defaultTied: Bool = false) throws {
        try rejectUnknown(decoder, CodingKeys.self, familyKeys)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        hiddenSize = try c.decode(Int.self, forKey: .hiddenSize)
        intermediateSize = try c.decode(Int.self, forKey: .intermediateSize)
        layers = try c.decode(Int.self, forKey: .layers)
        heads = try c.decode(Int.self, forKey: .heads)
        kvHeads = try c.decodeIfPresent(Int.self, forKey: .kvHeads) ?? heads
        headDim = try c.decodeIfPresent(Int.self, forKey: .headDim)
        vocabSize = try c.decode(Int.self, forKey: .vocabSize)
        ropeTheta = try c.decodeIfPresent(Float.self, forKey: .ropeTheta) ?? 10000
        ropeScaling = try c.decodeIfPresent(RopeScalingConfig.self, forKey: .ropeScaling)?.scaling ?? .none
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? defaultTied
        // Bounds far above any small model's, so that a garbage size is refused here rather than
        // overflowing a product of sizes or asking for terabytes later.
        for (value, key, most) in [(hiddenSize, CodingKeys.hiddenSize, SizeLimits.width), (intermediateSize, .intermediateSize, SizeLimits.intermediate),
                                   (layers, .layers, SizeLimits.count), (heads, .heads, SizeLimits.count), (kvHeads, .kvHeads, SizeLimits.count),
                                   (headDim ?? 1, .headDim, SizeLimits.headDim), (vocabSize, .vocabSize, SizeLimits.vocabulary)] {
            try requireSize(value, key, most: most)
        }
        try require(ropeTheta > 0, CodingKeys.ropeTheta, "must be positive, found \(ropeTheta)")
        try require(heads % kvHeads == 0, CodingKeys.kvHeads, "heads \(heads) must be a multiple of kv_heads \(kvHeads)")
        try require(headDim != nil || hiddenSize % heads == 0, CodingKeys.heads,
                    "hidden_size \(hiddenSize) is not divisible by heads \(heads) (give head_dim)")
        // Each within the bound, their products are the widths of q and of the cached keys and values.
        for (count, key) in [(heads, CodingKeys.heads), (kvHeads, .kvHeads)] {
            try require(count * resolvedHeadDim <= SizeLimits.width, key,
                        "\(count) heads of \(resolvedHeadDim) dimensions are \(count * resolvedHeadDim) wide, more than \(SizeLimits.width)")
        }
    }

    var resolvedHeadDim: Int { headDim ?? hiddenSize / heads }

    /// Rotary dimensions for a partial_rotary_factor, as transformers' int(head_dim * factor).
    func rotaryDim<K: CodingKey>(factor: Double, key: K) throws -> Int {
        try require(factor > 0 && factor <= 1, key, "must be in (0, 1], found \(factor)")
        let dim = Int(Double(resolvedHeadDim) * factor)
        try require(dim > 0 && dim % 2 == 0, key,
                    "gives \(dim) rotary dimensions of head_dim \(resolvedHeadDim); they must be a positive even number")
        return dim
    }

    /// The architecture fields that follow from the shape alone; the family sets the rest.
    func architecture(norm: DecoderArchitecture.Norm, normEps: Float, mlp: DecoderArchitecture.MLP,
                      residual: DecoderArchitecture.Residual = .sequential, rotaryDim: Int? = nil) throws -> DecoderArchitecture {
        // Rotary embeddings turn pairs of dimensions: a whole head rotates unless the family rotates part of it.
        try require(rotaryDim != nil || resolvedHeadDim % 2 == 0, headDim == nil ? CodingKeys.heads : .headDim,
                    "gives heads of \(resolvedHeadDim) dimensions; rotary embeddings need an even number")
        // Dynamic scaling raises the base to the power dim / (dim - 2) (transformers divides by zero).
        if case .dynamic = ropeScaling {
            try require((rotaryDim ?? resolvedHeadDim) > 2, CodingKeys.ropeScaling, "dynamic scaling needs more than 2 rotary dimensions")
        }
        return DecoderArchitecture(
            hiddenSize: hiddenSize, intermediateSize: intermediateSize, layers: layers, heads: heads, kvHeads: kvHeads,
            headDim: resolvedHeadDim, vocabSize: vocabSize, norm: norm, normEps: normEps, qkvBias: false, outputBias: false,
            qkNorm: false, residual: residual, mlp: mlp, mlpBias: false, rotaryDim: rotaryDim ?? resolvedHeadDim,
            ropeTheta: ropeTheta, ropeScaling: ropeScaling, embeddingScale: nil, tiedEmbeddings: tieWordEmbeddings, lmHeadBias: false)
    }
}

/// config.rope_scaling: a rope type past "default" and its parameters, under transformers' names
/// (`chimera import` resolves transformers' defaults and derived values into these).
struct RopeScalingConfig: Decodable {
    var scaling: RotaryScaling

    enum CodingKeys: String, CodingKey, CaseIterable {
        case type, factor, truncate
        case originalMaxPositionEmbeddings = "original_max_position_embeddings"
        case lowFreqFactor = "low_freq_factor", highFreqFactor = "high_freq_factor"
        case betaFast = "beta_fast", betaSlow = "beta_slow", attentionFactor = "attention_factor"
    }

    /// The fields each type reads beside `type`; another is refused rather than silently unused.
    static let fields: [String: Set<CodingKeys>] = [
        "linear": [.factor], "dynamic": [.factor, .originalMaxPositionEmbeddings],
        "llama3": [.factor, .originalMaxPositionEmbeddings, .lowFreqFactor, .highFreqFactor],
        "yarn": [.factor, .originalMaxPositionEmbeddings, .betaFast, .betaSlow, .attentionFactor, .truncate],
    ]

    init(from decoder: Decoder) throws {
        try rejectUnknown(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        func check(_ condition: Bool, _ key: CodingKeys, _ message: String) throws {
            if !condition { throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath + [key], debugDescription: message)) }
        }
        let type = try c.decode(String.self, forKey: .type)
        guard let allowed = Self.fields[type] else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath + [CodingKeys.type], debugDescription:
                "unsupported rope type '\(type)' (supported: \(Self.fields.keys.sorted().joined(separator: ", ")))"))
        }
        for key in c.allKeys where key != .type {
            try check(allowed.contains(key), key, "does not apply to rope type '\(type)' (its fields: \(allowed.map(\.stringValue).sorted().joined(separator: ", ")))")
        }
        func number(_ key: CodingKeys, default value: Double? = nil) throws -> Double {
            guard let found = try c.decodeIfPresent(Double.self, forKey: key) ?? value else {
                throw DecodingError.keyNotFound(key, .init(codingPath: decoder.codingPath, debugDescription: "rope type '\(type)' needs \(key.stringValue)"))
            }
            try check(found.isFinite && found > 0, key, "must be a positive number, found \(found)")
            return found
        }
        let factor = try number(.factor)
        func originalContext() throws -> Int {
            let context = try c.decode(Int.self, forKey: .originalMaxPositionEmbeddings)
            try check(context > 0 && context <= SizeLimits.tokens, .originalMaxPositionEmbeddings, "must be in 1...\(SizeLimits.tokens), found \(context)")
            return context
        }
        switch type {
        case "linear": scaling = .linear(factor: factor)
        case "dynamic": scaling = .dynamic(factor: factor, originalContext: try originalContext())
        case "llama3":
            let low = try number(.lowFreqFactor), high = try number(.highFreqFactor)
            try check(high > low, .highFreqFactor, "must be greater than low_freq_factor \(low), found \(high)")
            scaling = .llama3(factor: factor, lowFrequencyFactor: low, highFrequencyFactor: high, originalContext: try originalContext())
        default:  // yarn; the attention factor's default is the paper's 0.1 ln(factor) + 1, as transformers'
            scaling = .yarn(factor: factor, originalContext: try originalContext(),
                            betaFast: try number(.betaFast, default: 32), betaSlow: try number(.betaSlow, default: 1),
                            attentionFactor: try number(.attentionFactor, default: RotaryScaling.yarnMagnitude(factor)),
                            truncate: try c.decodeIfPresent(Bool.self, forKey: .truncate) ?? true)
        }
    }
}

/// A family's activation field, checked against the kernels.
func activation<K: CodingKey>(_ name: String, _ key: K) throws -> Activation {
    guard let activation = Activation(configName: name) else {
        throw DecodingError.dataCorrupted(.init(codingPath: [key], debugDescription: "unsupported activation '\(name)' (supported: \(Activation.configNames.joined(separator: ", ")))"))
    }
    return activation
}

// MARK: - Model

public final class DecoderTransformer: LanguageModel, @unchecked Sendable {
    public let manifest: ComponentManifest
    public let architecture: DecoderArchitecture
    public let parameters: [(name: String, tensor: Tensor)]
    public let contextLength: Int
    let embeddings: WeightMatrix  // [vocab, hidden]; looked up a row at a time
    let layers: [Layer]
    let finalNorm: Norm
    let lmHead: LinearLayer  // the embeddings when tied
    let rotary: RotaryEmbedding

    /// RMSNorm or LayerNorm, as the architecture says.
    struct Norm {
        let kind: DecoderArchitecture.Norm
        let weight: Tensor
        let bias: Tensor?
        let eps: Float

        init(_ loader: ParameterLoader, _ name: String, _ a: DecoderArchitecture) throws {
            kind = a.norm
            eps = a.normEps
            weight = try loader.tensor(name + ".weight", shape: [a.hiddenSize])
            bias = a.norm == .layer ? try loader.tensor(name + ".bias", shape: [a.hiddenSize]) : nil
        }

        func callAsFunction(_ x: Tensor, into out: Tensor) {
            switch kind {
            case let .rms(offset): rmsNorm(x, weight: weight, eps: eps, weightOffset: offset, into: out)
            case .layer: layerNorm(x, weight: weight, bias: bias, eps: eps, into: out)
            }
        }
    }

    struct Layer {
        let inputNorm: Norm
        let postAttentionNorm: Norm?  // nil with a parallel residual
        let q, k, v, o: LinearLayer
        let qNorms, kNorms: [Tensor]  // one weight per head when qk_layernorm
        let gate: LinearLayer?  // gated MLP only
        let up, down: LinearLayer  // fc1 / fc2 for a plain MLP
    }

    public init(manifest: ComponentManifest, architecture a: DecoderArchitecture, weights w: ParameterLoader) throws {
        self.manifest = manifest
        architecture = a
        contextLength = manifest.contextLength ?? 2048
        let h = a.hiddenSize, hd = a.headDim, ffn = a.intermediateSize
        let qWidth = a.heads * hd, kvWidth = a.kvHeads * hd
        // Tied, the table is also the lm_head, which every decoded token multiplies by: it is then
        // loaded like the other matrices (in its stored or converted format, quantized by `quantize`).
        embeddings = a.tiedEmbeddings
            ? try w.matrix("model.embed_tokens.weight", shape: [a.vocabSize, h])
            : WeightMatrix(try w.tensor("model.embed_tokens.weight", shape: [a.vocabSize, h]))
        layers = try (0..<a.layers).map { i in
            let l = w.scoped("model.layers.\(i).")
            func headNorms(_ name: String, _ count: Int) throws -> [Tensor] {
                guard a.qkNorm else { return [] }
                return try (0..<count).map { try l.tensor("self_attn.\(name).norms.\($0).weight", shape: [hd]) }
            }
            let gated: Bool, names: (up: String, down: String)
            switch a.mlp {
            case .gated: gated = true; names = ("mlp.up_proj", "mlp.down_proj")
            case .plain: gated = false; names = ("mlp.fc1", "mlp.fc2")
            }
            return Layer(
                inputNorm: try Norm(l, "input_layernorm", a),
                postAttentionNorm: a.residual == .sequential ? try Norm(l, "post_attention_layernorm", a) : nil,
                q: try LinearLayer(l, "self_attn.q_proj", input: h, output: qWidth, bias: a.qkvBias),
                k: try LinearLayer(l, "self_attn.k_proj", input: h, output: kvWidth, bias: a.qkvBias),
                v: try LinearLayer(l, "self_attn.v_proj", input: h, output: kvWidth, bias: a.qkvBias),
                o: try LinearLayer(l, a.outputProjectionName, input: qWidth, output: h, bias: a.outputBias),
                qNorms: try headNorms("q_layernorm", a.heads), kNorms: try headNorms("k_layernorm", a.kvHeads),
                gate: gated ? try LinearLayer(l, "mlp.gate_proj", input: h, output: ffn, bias: a.mlpBias) : nil,
                up: try LinearLayer(l, names.up, input: h, output: ffn, bias: a.mlpBias),
                down: try LinearLayer(l, names.down, input: ffn, output: h, bias: a.mlpBias))
        }
        finalNorm = try Norm(w, a.finalNormName, a)
        // Phi keeps its lm_head bias even when the weight is tied.
        lmHead = a.tiedEmbeddings
            ? LinearLayer(matrix: embeddings, bias: a.lmHeadBias ? try w.tensor("lm_head.bias", shape: [a.vocabSize]) : nil)
            : try LinearLayer(w, "lm_head", input: h, output: a.vocabSize, bias: a.lmHeadBias)
        rotary = RotaryEmbedding(headDim: hd, rotaryDim: a.rotaryDim, theta: a.ropeTheta, scaling: a.ropeScaling)
        parameters = w.loaded
        let sliceWidth = min(ffn, (h + 31) / 32 * 32)
        mlpSliceWidth = sliceWidth
        mlpSlices = layers.map { Self.slices(of: $0, width: sliceWidth) }
        // Float32 activations a pass keeps per position (forwardPass's workspace rows: hidden, x,
        // projected; q, attended; k, v; a slice of the MLP's gate and up), against the weights'
        // bytes: see `prefillChunk`. (TinyLlama: 58 KB a position, 88 KB with the whole intermediate.)
        let activationBytes = 4 * (3 * h + 2 * qWidth + 2 * kvWidth + 2 * (mlpSlices.first?.first?.columns.count ?? ffn))
        prefillChunk = max(256, w.weightBytes / 20 / activationBytes)
    }

    /// Widest slice of the MLP's intermediate that a prompt's pass computes at once (rounded to
    /// whole blocks of 32, the slices equal): the gate and up projections of the slice, their
    /// activation, and the slice's share of the down projection (a range of its columns), then the
    /// next slice. The pass then holds [tokens, slice] activations, not two [tokens, intermediate]
    /// ones, and still converts each weight once (Qwen2-0.5B: 4864 in 6 slices of 832, so a
    /// 640-token prompt at q4_0 fits in 2 chunks instead of 3). Decoded tokens take the whole
    /// intermediate at once. Default: the hidden size.
    public var mlpSliceWidth: Int {
        didSet { mlpSlices = layers.map { Self.slices(of: $0, width: mlpSliceWidth) } }
    }
    private var mlpSlices: [[MLPSlice]] = []

    /// The first MLP products (gate and up, or fc1) of a range of the intermediate, in place.
    struct MLPSlice {
        let gate: LinearLayer?
        let up: LinearLayer
        let columns: Range<Int>
    }

    static func slices(of layer: Layer, width: Int) -> [MLPSlice] {
        let intermediate = layer.up.outputWidth
        let count = (intermediate + max(1, width) - 1) / max(1, width)
        let sliceWidth = min(intermediate, ((intermediate + count - 1) / count + 31) / 32 * 32)
        return stride(from: 0, to: intermediate, by: sliceWidth).map { j0 in
            let columns = j0..<min(intermediate, j0 + sliceWidth)
            return MLPSlice(gate: layer.gate?.outputs(columns), up: layer.up.outputs(columns), columns: columns)
        }
    }

    public var hiddenSize: Int { architecture.hiddenSize }
    public var vocabularySize: Int { architecture.vocabSize }

    /// Token-only scale (see `scaleSplicedFeatures`).
    private var embedScale: Float? { architecture.scaleSplicedFeatures ? nil : architecture.embeddingScale }

    public func embed(_ tokens: [Int]) throws -> Tensor {
        let out = try gatherEmbeddings(embeddings, tokens, model: id)
        if let scale = embedScale { scaleInPlace(out, scale) }
        return out
    }

    public var cacheShape: (layers: Int, width: Int) { (architecture.layers, architecture.kvHeads * architecture.headDim) }

    public func makeCache(capacity: Int, precision: KVPrecision) -> KVCache {
        KVCache(layers: architecture.layers, capacity: min(capacity, contextLength), kvHeads: architecture.kvHeads,
                headDim: architecture.headDim, precision: precision)
    }

    public func embed(token: Int, into row: Tensor) throws {
        try copyEmbedding(embeddings, token, into: row.data, model: id)
        if let scale = embedScale { scaleInPlace(row, scale) }
    }

    /// Longest run of positions one pass takes: a longer prompt is fed in chunks of equal length
    /// (each appending to the cache), so that the activations of a prefill (the attention's rows and
    /// a slice of the MLP's, see `mlpSliceWidth`) stay within about 5 % of the weights' bytes (at
    /// least 256 positions a chunk) — on Qwen2-0.5B at q4_0 a 640-token prompt in one pass would hold
    /// 8 MB more than in two, 2.5 % of its weights and cache. Fewer chunks are faster: each converts and packs every weight matrix once (TinyLlama
    /// q4_0, 640 tokens: 98–100 tokens/s in three chunks, 112–126 in one). The logits are the same:
    /// every position sees the same keys either way.
    public var prefillChunk: Int

    public func forward(embeddings input: Tensor, cache: KVCache, lastOnly: Bool) throws -> Tensor {
        let tokens = input.rows
        try checkRoom(start: cache.length, tokens: tokens, cache: cache, contextLength: contextLength, model: id)
        guard input.columns == hiddenSize else {
            throw LanguageModelError.badEmbeddings(model: id, expected: hiddenSize, found: input.columns)
        }
        let longest = max(1, prefillChunk), chunks = (tokens + longest - 1) / longest, chunk = (tokens + chunks - 1) / chunks
        let passEnd = cache.length + tokens  // (dynamic rotary scaling rotates the whole pass by its length)
        guard chunks > 1 else { return forwardPass(input, cache: cache, lastOnly: lastOnly, passEnd: passEnd)! }
        let all = lastOnly ? nil : Tensor(zeros: [tokens, vocabularySize])
        var logits: Tensor?
        for c0 in stride(from: 0, to: tokens, by: chunk) {
            let c1 = min(tokens, c0 + chunk)
            // With lastOnly, only the final chunk's last position needs the lm_head.
            logits = forwardPass(input.rows(c0..<c1), cache: cache, lastOnly: lastOnly, passEnd: passEnd, logits: !lastOnly || c1 == tokens)
            if let all, let logits { (all.data + c0 * vocabularySize).update(from: logits.data, count: logits.count) }
        }
        return all ?? logits!
    }

    /// One pass over `input` (room and width already checked); nil without `logits` (an earlier
    /// chunk of a prompt, whose keys and values are all that is needed).
    private func forwardPass(_ input: Tensor, cache: KVCache, lastOnly: Bool, passEnd: Int, logits wanted: Bool = true) -> Tensor? {
        let a = architecture
        let start = cache.length, tokens = input.rows
        let hd = a.headDim, h = hiddenSize
        let qWidth = a.heads * hd, kvWidth = a.kvHeads * hd
        let ws = cache.workspace
        let hidden = ws.tensor("hidden", rows: tokens, columns: h)
        hidden.data.update(from: input.data, count: input.count)
        // Here rather than in `embed`, so that spliced image features are scaled too (Gemma).
        if let scale = a.embeddingScale, a.scaleSplicedFeatures { scaleInPlace(hidden, scale) }
        let x = ws.tensor("x", rows: tokens, columns: h), projected = ws.tensor("projected", rows: tokens, columns: h)
        let q = ws.tensor("q", rows: tokens, columns: qWidth), attended = ws.tensor("attended", rows: tokens, columns: qWidth)
        let k = ws.tensor("k", rows: tokens, columns: kvWidth), v = ws.tensor("v", rows: tokens, columns: kvWidth)
        // A decoded token (or a few rows, as many as the layers' matrices take row by row): its
        // products are matrix-vector ones, during which waiting workers can prefetch
        // (WeightMatrix.prefetchDecodeProduct).
        let decoding = tokens <= (layers.first?.q.matrix.rowByRowLimit ?? WeightMatrix.rowByRowLimit)
        // The MLP's first products (whole, or a slice) and their activation, into "gate".
        func activatedMLP(_ gateLayer: LinearLayer?, _ upLayer: LinearLayer) -> Tensor {
            let gate = ws.tensor("gate", rows: tokens, columns: upLayer.outputWidth)
            switch a.mlp {
            case let .gated(activation):
                let up = ws.tensor("up", rows: tokens, columns: upLayer.outputWidth)
                LinearLayer.apply(x, (gateLayer!, gate), (upLayer, up))
                gatedActivation(gate: gate, up: up, activation, into: gate)
            case let .plain(activation):
                upLayer(x, into: gate)
                activateInPlace(gate, activation)
            }
            return gate
        }
        let angles = ws.tensor("rotary angles", rows: tokens, columns: rotary.rotaryDim)
        rotary.angles(startPosition: start, passEnd: passEnd, into: angles)
        for (i, layer) in layers.enumerated() {
            layer.inputNorm(hidden, into: x)
            let layerCache = cache.layers[i]
            if decoding && tokens == 1 { layerCache.prefetchAppend(position: start) }
            LinearLayer.apply(x, (layer.q, q), (layer.k, k), (layer.v, v))  // one product for the three
            if decoding { layerCache.prefetchDecodeAttention(positions: start + tokens) }
            if a.qkNorm {
                normalizeHeads(q, layer.qNorms)
                normalizeHeads(k, layer.kNorms)
            }
            rotary.applyInPlace(q, heads: a.heads, angles: angles)
            rotary.applyInPlace(k, heads: a.kvHeads, angles: angles)
            layerCache.append(keys: k, values: v)
            cachedAttention(queries: q, cache: layerCache, heads: a.heads, start: start, workspace: ws, into: attended)
            layer.o(attended, into: projected)
            if decoding {
                if let gate = layer.gate { WeightMatrix.prefetchDecodeProduct(gate.matrix, layer.up.matrix) }
                else { WeightMatrix.prefetchDecodeProduct(layer.up.matrix) }
            }
            addInPlace(hidden, projected)
            // Parallel: the MLP reads the same normed input `x` as attention did.
            if let postAttentionNorm = layer.postAttentionNorm { postAttentionNorm(hidden, into: x) }
            // (by the down projection's own limit: below it, a column range would take the widened-tile fallback)
            if tokens > layer.down.matrix.rowByRowLimit && mlpSlices[i].count > 1 {  // see mlpSliceWidth
                for (s, slice) in mlpSlices[i].enumerated() {
                    layer.down.matrix.apply(activatedMLP(slice.gate, slice.up), columns: slice.columns,
                                            bias: s == 0 ? layer.down.bias : nil, accumulate: s > 0, into: projected)
                }
            } else {
                let activated = activatedMLP(layer.gate, layer.up)
                if decoding { WeightMatrix.prefetchDecodeProduct(layer.down.matrix) }
                layer.down(activated, into: projected)
            }
            if decoding {
                if i + 1 < layers.count {
                    let next = layers[i + 1]
                    WeightMatrix.prefetchDecodeProduct(next.q.matrix, next.k.matrix, next.v.matrix)
                } else { WeightMatrix.prefetchDecodeProduct(lmHead.matrix) }
            }
            addInPlace(hidden, projected)
        }
        guard wanted else { return nil }
        let outRows = lastOnly ? 1 : tokens
        let last = ws.tensor("last", rows: outRows, columns: h)
        last.data.update(from: hidden.data + (tokens - outRows) * h, count: outRows * h)
        let normed = ws.tensor("final", rows: outRows, columns: h)
        finalNorm(last, into: normed)
        let logits = ws.tensor("logits", rows: outRows, columns: a.vocabSize)
        lmHead(normed, into: logits)
        return logits
    }

    /// Bias-free LayerNorm of every head of every row of x [tokens, heads * headDim], in place.
    private func normalizeHeads(_ x: Tensor, _ weights: [Tensor]) {
        let hd = architecture.headDim, width = weights.count * hd
        for t in 0..<x.rows {
            for (head, weight) in weights.enumerated() {
                let p = x.data + t * width + head * hd
                layerNorm(p, into: p, count: hd, weight: weight.data, bias: nil, eps: architecture.normEps)
            }
        }
    }
}

// MARK: - Shared by language models

public enum LanguageModelError: LocalizedError {
    case tokenOutOfRange(model: String, token: Int, vocabulary: Int)
    case contextOverflow(model: String, needed: Int, limit: Int)
    case badEmbeddings(model: String, expected: Int, found: Int)

    public var errorDescription: String? {
        switch self {
        case let .tokenOutOfRange(model, token, vocabulary):
            return "language model '\(model)': token id \(token) is outside its vocabulary of \(vocabulary)"
        case let .contextOverflow(model, needed, limit):
            return "language model '\(model)': the sequence needs \(needed) positions, more than its context of \(limit)"
        case let .badEmbeddings(model, expected, found):
            return "language model '\(model)': embeddings have width \(found), expected \(expected)"
        }
    }
}

func gatherEmbeddings(_ table: WeightMatrix, _ tokens: [Int], model: String) throws -> Tensor {
    let out = Tensor(zeros: [tokens.count, table.columns])
    for (row, token) in tokens.enumerated() { try copyEmbedding(table, token, into: out.data + row * table.columns, model: model) }
    return out
}

func copyEmbedding(_ table: WeightMatrix, _ token: Int, into destination: UnsafeMutablePointer<Float>, model: String) throws {
    guard token >= 0 && token < table.rows else {
        throw LanguageModelError.tokenOutOfRange(model: model, token: token, vocabulary: table.rows)
    }
    table.widenRows(token, token + 1, into: destination)
}

func checkRoom(start: Int, tokens: Int, cache: KVCache, contextLength: Int, model: String) throws {
    let limit = min(cache.capacity, contextLength)
    guard start + tokens <= limit else {
        throw LanguageModelError.contextOverflow(model: model, needed: start + tokens, limit: limit)
    }
}
