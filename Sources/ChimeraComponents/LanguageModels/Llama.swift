import Chimera
import ChimeraTensor
import Foundation

// MARK: - Configuration

/// Llama / TinyLlama, as transformers' LlamaForCausalLM: RMSNorm, SwiGLU MLP, grouped-query
/// attention, rotate-half RoPE.
public struct LlamaConfig: Codable, Sendable {
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var layers: Int
    public var heads: Int
    public var kvHeads: Int
    public var headDim: Int?
    public var vocabSize: Int
    public var ropeTheta: Float
    public var rmsNormEps: Float
    public var tieWordEmbeddings: Bool
    public var attentionBias: Bool
    public var mlpBias: Bool
    public var hiddenAct: String

    enum CodingKeys: String, CodingKey, CaseIterable {
        case layers, heads
        case hiddenSize = "hidden_size", intermediateSize = "intermediate_size", kvHeads = "kv_heads"
        case headDim = "head_dim", vocabSize = "vocab_size", ropeTheta = "rope_theta", rmsNormEps = "rms_norm_eps"
        case tieWordEmbeddings = "tie_word_embeddings", attentionBias = "attention_bias", mlpBias = "mlp_bias"
        case hiddenAct = "hidden_act"
    }

    public init(from decoder: Decoder) throws {
        try rejectUnknown(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        hiddenSize = try c.decode(Int.self, forKey: .hiddenSize)
        intermediateSize = try c.decode(Int.self, forKey: .intermediateSize)
        layers = try c.decode(Int.self, forKey: .layers)
        heads = try c.decode(Int.self, forKey: .heads)
        kvHeads = try c.decodeIfPresent(Int.self, forKey: .kvHeads) ?? heads
        headDim = try c.decodeIfPresent(Int.self, forKey: .headDim)
        vocabSize = try c.decode(Int.self, forKey: .vocabSize)
        ropeTheta = try c.decodeIfPresent(Float.self, forKey: .ropeTheta) ?? 10000
        rmsNormEps = try c.decodeIfPresent(Float.self, forKey: .rmsNormEps) ?? 1e-6
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? false
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        mlpBias = try c.decodeIfPresent(Bool.self, forKey: .mlpBias) ?? false
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        try require(heads > 0 && kvHeads > 0 && heads % kvHeads == 0, CodingKeys.kvHeads,
                    "heads \(heads) must be a multiple of kv_heads \(kvHeads)")
        try require(headDim != nil || hiddenSize % heads == 0, CodingKeys.heads,
                    "hidden_size \(hiddenSize) is not divisible by heads \(heads) (give head_dim)")
        try require(Activation(configName: hiddenAct) != nil, CodingKeys.hiddenAct, "unsupported activation '\(hiddenAct)'")
    }

    var resolvedHeadDim: Int { headDim ?? hiddenSize / heads }
}

// MARK: - Model

public final class LlamaModel: LanguageModel, @unchecked Sendable {
    public let manifest: ComponentManifest
    public let config: LlamaConfig
    public let parameters: [(name: String, tensor: Tensor)]
    public let contextLength: Int
    let embeddings: Tensor  // [vocab, hidden]
    let layers: [Layer]
    let finalNorm: Tensor
    let lmHead: LinearLayer  // the embeddings when tied
    let rotary: RotaryEmbedding
    let activation: Activation

    struct Layer {
        let inputNorm, postAttentionNorm: Tensor
        let q, k, v, o, gate, up, down: LinearLayer
    }

    public init(manifest: ComponentManifest, weights w: ParameterLoader) throws {
        self.manifest = manifest
        let config = try manifest.decodeConfig(LlamaConfig.self)
        self.config = config
        contextLength = manifest.contextLength ?? 2048
        let h = config.hiddenSize, hd = config.resolvedHeadDim, ffn = config.intermediateSize
        let qWidth = config.heads * hd, kvWidth = config.kvHeads * hd
        embeddings = try w.tensor("model.embed_tokens.weight", shape: [config.vocabSize, h])
        layers = try (0..<config.layers).map { i in
            let l = w.scoped("model.layers.\(i).")
            let ab = config.attentionBias, mb = config.mlpBias
            return Layer(
                inputNorm: try l.tensor("input_layernorm.weight", shape: [h]),
                postAttentionNorm: try l.tensor("post_attention_layernorm.weight", shape: [h]),
                q: try LinearLayer(l, "self_attn.q_proj", input: h, output: qWidth, bias: ab),
                k: try LinearLayer(l, "self_attn.k_proj", input: h, output: kvWidth, bias: ab),
                v: try LinearLayer(l, "self_attn.v_proj", input: h, output: kvWidth, bias: ab),
                o: try LinearLayer(l, "self_attn.o_proj", input: qWidth, output: h, bias: ab),
                gate: try LinearLayer(l, "mlp.gate_proj", input: h, output: ffn, bias: mb),
                up: try LinearLayer(l, "mlp.up_proj", input: h, output: ffn, bias: mb),
                down: try LinearLayer(l, "mlp.down_proj", input: ffn, output: h, bias: mb))
        }
        finalNorm = try w.tensor("model.norm.weight", shape: [h])
        lmHead = config.tieWordEmbeddings ? LinearLayer(weight: embeddings, bias: nil)
            : try LinearLayer(w, "lm_head", input: h, output: config.vocabSize, bias: false)
        rotary = RotaryEmbedding(headDim: hd, theta: config.ropeTheta)
        activation = Activation(configName: config.hiddenAct)!
        parameters = w.loaded
    }

    public var hiddenSize: Int { config.hiddenSize }
    public var vocabularySize: Int { config.vocabSize }

    public func embed(_ tokens: [Int]) throws -> Tensor {
        try gatherEmbeddings(embeddings, tokens, model: id)
    }

    public func makeCache(capacity: Int) -> KVCache {
        KVCache(layers: config.layers, capacity: min(capacity, contextLength), width: config.kvHeads * config.resolvedHeadDim)
    }

    public func embed(token: Int, into row: Tensor) throws {
        try copyEmbedding(embeddings, token, into: row.data, model: id)
    }

    public func forward(embeddings input: Tensor, cache: KVCache, lastOnly: Bool) throws -> Tensor {
        let start = cache.length, tokens = input.rows
        try checkRoom(start: start, tokens: tokens, cache: cache, contextLength: contextLength, model: id)
        guard input.columns == hiddenSize else {
            throw LanguageModelError.badEmbeddings(model: id, expected: hiddenSize, found: input.columns)
        }
        let hd = config.resolvedHeadDim, eps = config.rmsNormEps, h = hiddenSize
        let qWidth = config.heads * hd, kvWidth = config.kvHeads * hd
        let ws = cache.workspace
        let hidden = ws.tensor("hidden", rows: tokens, columns: h)
        hidden.data.update(from: input.data, count: input.count)
        let x = ws.tensor("x", rows: tokens, columns: h), projected = ws.tensor("projected", rows: tokens, columns: h)
        let q = ws.tensor("q", rows: tokens, columns: qWidth), attended = ws.tensor("attended", rows: tokens, columns: qWidth)
        let k = ws.tensor("k", rows: tokens, columns: kvWidth), v = ws.tensor("v", rows: tokens, columns: kvWidth)
        let gate = ws.tensor("gate", rows: tokens, columns: config.intermediateSize)
        let up = ws.tensor("up", rows: tokens, columns: config.intermediateSize)
        // Sized for the whole cache so that its view stays the same from one decoded token to the next.
        let scores = ws.scratch("scores", count: tokens * cache.capacity)
        for (i, layer) in layers.enumerated() {
            rmsNorm(hidden, weight: layer.inputNorm, eps: eps, into: x)
            layer.q(x, into: q)
            layer.k(x, into: k)
            layer.v(x, into: v)
            rotary.applyInPlace(q, heads: config.heads, startPosition: start)
            rotary.applyInPlace(k, heads: config.kvHeads, startPosition: start)
            let layerCache = cache.layers[i]
            layerCache.append(keys: k, values: v)
            multiHeadAttention(queries: q, keys: layerCache.keys.data, values: layerCache.values.data, keyCount: layerCache.length,
                               heads: config.heads, kvHeads: config.kvHeads, headDim: hd, causalOffset: start,
                               scores: scores, into: attended)
            layer.o(attended, into: projected)
            addInPlace(hidden, projected)
            rmsNorm(hidden, weight: layer.postAttentionNorm, eps: eps, into: x)
            layer.gate(x, into: gate)
            layer.up(x, into: up)
            gatedActivation(gate: gate, up: up, activation, into: gate)
            layer.down(gate, into: projected)
            addInPlace(hidden, projected)
        }
        let outRows = lastOnly ? 1 : tokens
        let last = ws.tensor("last", rows: outRows, columns: h)
        last.data.update(from: hidden.data + (tokens - outRows) * h, count: outRows * h)
        let normed = ws.tensor("final", rows: outRows, columns: h)
        rmsNorm(last, weight: finalNorm, eps: eps, into: normed)
        let logits = ws.tensor("logits", rows: outRows, columns: config.vocabSize)
        lmHead(normed, into: logits)
        return logits
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

func gatherEmbeddings(_ table: Tensor, _ tokens: [Int], model: String) throws -> Tensor {
    let width = table.shape[1]
    let out = Tensor(zeros: [tokens.count, width])
    for (row, token) in tokens.enumerated() { try copyEmbedding(table, token, into: out.data + row * width, model: model) }
    return out
}

func copyEmbedding(_ table: Tensor, _ token: Int, into destination: UnsafeMutablePointer<Float>, model: String) throws {
    let vocabulary = table.shape[0], width = table.shape[1]
    guard token >= 0 && token < vocabulary else {
        throw LanguageModelError.tokenOutOfRange(model: model, token: token, vocabulary: vocabulary)
    }
    destination.update(from: table.data + token * width, count: width)
}

func checkRoom(start: Int, tokens: Int, cache: KVCache, contextLength: Int, model: String) throws {
    let limit = min(cache.capacity, contextLength)
    guard start + tokens <= limit else {
        throw LanguageModelError.contextOverflow(model: model, needed: start + tokens, limit: limit)
    }
}
