import Chimera
import ChimeraIO
import ChimeraTensor
import Foundation

// MARK: - Configuration

/// CLIP vision transformer, as transformers' CLIPVisionModel: conv patch embedding without bias,
/// class token, learned positions, pre-layernorm ("pre_layrnorm"), quick_gelu MLP.
public struct CLIPVisionConfig: Codable, Sendable {
    public var hiddenSize: Int
    public var layers: Int
    public var heads: Int
    public var intermediateSize: Int
    public var imageSize: Int
    public var patchSize: Int
    public var layerNormEps: Float = 1e-5
    public var hiddenAct: String = "quick_gelu"
    public var channels: Int = 3

    enum CodingKeys: String, CodingKey, CaseIterable {
        case layers, heads, channels
        case hiddenSize = "hidden_size", intermediateSize = "intermediate_size", imageSize = "image_size"
        case patchSize = "patch_size", layerNormEps = "layer_norm_eps", hiddenAct = "hidden_act"
    }

    public init(hiddenSize: Int, layers: Int, heads: Int, intermediateSize: Int, imageSize: Int, patchSize: Int) {
        self.hiddenSize = hiddenSize; self.layers = layers; self.heads = heads
        self.intermediateSize = intermediateSize; self.imageSize = imageSize; self.patchSize = patchSize
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try rejectUnknown(decoder, CodingKeys.self)
        hiddenSize = try c.decode(Int.self, forKey: .hiddenSize)
        layers = try c.decode(Int.self, forKey: .layers)
        heads = try c.decode(Int.self, forKey: .heads)
        intermediateSize = try c.decode(Int.self, forKey: .intermediateSize)
        imageSize = try c.decode(Int.self, forKey: .imageSize)
        patchSize = try c.decode(Int.self, forKey: .patchSize)
        layerNormEps = try c.decodeIfPresent(Float.self, forKey: .layerNormEps) ?? 1e-5
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "quick_gelu"
        channels = try c.decodeIfPresent(Int.self, forKey: .channels) ?? 3
        for (value, key) in [(hiddenSize, CodingKeys.hiddenSize), (layers, .layers), (heads, .heads),
                             (intermediateSize, .intermediateSize), (imageSize, .imageSize), (patchSize, .patchSize)] {
            try require(value > 0, key, "must be positive, found \(value)")
        }
        try require(hiddenSize % heads == 0, CodingKeys.heads, "hidden_size \(hiddenSize) is not divisible by heads \(heads)")
        try require(imageSize % patchSize == 0, CodingKeys.patchSize, "image_size \(imageSize) is not a multiple of patch_size \(patchSize)")
        try require(Activation(configName: hiddenAct) != nil, CodingKeys.hiddenAct, "unsupported activation '\(hiddenAct)'")
    }

    var gridSide: Int { imageSize / patchSize }
    var tokens: Int { gridSide * gridSide + 1 }
}

// MARK: - Encoder

public final class CLIPVisionEncoder: ModalityEncoder, @unchecked Sendable {
    public let manifest: ComponentManifest
    public let config: CLIPVisionConfig
    public let parameters: [(name: String, tensor: Tensor)]
    let preprocessing: ImagePreprocessing
    let patchEmbedding: LinearLayer  // the conv kernel flattened to [hidden, channels * patch * patch]
    let classEmbedding: Tensor    // [hidden]
    let positionEmbedding: Tensor // [tokens, hidden]
    let preNorm: LayerNormLayer
    let layers: [Layer]
    let activation: Activation

    struct Layer {
        let norm1, norm2: LayerNormLayer
        let q, k, v, out, fc1, fc2: LinearLayer
    }

    public init(manifest: ComponentManifest, weights: ParameterLoader) throws {
        self.manifest = manifest
        let config = try manifest.decodeConfig(CLIPVisionConfig.self)
        self.config = config
        guard let preprocessing = manifest.preprocess else {
            throw ManifestError.invalid(file: manifest.origin, detail: "preprocess: required for image encoders")
        }
        self.preprocessing = preprocessing
        activation = Activation(configName: config.hiddenAct)!
        let h = config.hiddenSize, p = config.patchSize
        let w = weights
        patchEmbedding = LinearLayer(
            weight: try w.tensor("embeddings.patch_embedding.weight", shape: [h, config.channels, p, p]).reshaped([h, config.channels * p * p]),
            bias: nil)
        classEmbedding = try w.tensor("embeddings.class_embedding", shape: [h])
        positionEmbedding = try w.tensor("embeddings.position_embedding.weight", shape: [config.tokens, h])
        preNorm = try LayerNormLayer(w, "pre_layrnorm", width: h, eps: config.layerNormEps)
        layers = try (0..<config.layers).map { i in
            let l = w.scoped("encoder.layers.\(i).")
            return Layer(
                norm1: try LayerNormLayer(l, "layer_norm1", width: h, eps: config.layerNormEps),
                norm2: try LayerNormLayer(l, "layer_norm2", width: h, eps: config.layerNormEps),
                q: try LinearLayer(l, "self_attn.q_proj", input: h, output: h, bias: true),
                k: try LinearLayer(l, "self_attn.k_proj", input: h, output: h, bias: true),
                v: try LinearLayer(l, "self_attn.v_proj", input: h, output: h, bias: true),
                out: try LinearLayer(l, "self_attn.out_proj", input: h, output: h, bias: true),
                fc1: try LinearLayer(l, "mlp.fc1", input: h, output: config.intermediateSize, bias: true),
                fc2: try LinearLayer(l, "mlp.fc2", input: config.intermediateSize, output: h, bias: true))
        }
        parameters = w.loaded
    }

    public var hiddenStateCount: Int { config.layers + 1 }
    public var output: TokenContract {
        TokenContract(width: config.hiddenSize, tokens: config.tokens, grid: [config.gridSide, config.gridSide])
    }

    public func prepareInput(contentsOf url: URL) throws -> Tensor {
        // transformers' convert_to_rgb composites transparent images onto white.
        let image = try ImageDecoder.decode(contentsOf: url)
        return preprocessing.pixelValues(image.hasAlpha ? image.compositedOnWhite() : image)
    }

    /// Hidden state `layer` (0 = after pre-layernorm; negative counts from the end), before post_layernorm.
    public func hiddenState(_ pixels: Tensor, layer: Int) throws -> Tensor {
        let index = layer < 0 ? hiddenStateCount + layer : layer
        guard index >= 0, index < hiddenStateCount else {
            throw EncoderError.badLayer(encoder: id, layer: layer, count: hiddenStateCount)
        }
        let s = config.imageSize
        guard pixels.shape == [config.channels, s, s] else {
            throw EncoderError.badInput(encoder: id, expected: [config.channels, s, s], found: pixels.shape)
        }
        var hidden = preNorm(embed(pixels))
        for l in layers.prefix(index) { hidden = forward(l, hidden) }
        return hidden
    }

    /// Class token + patch embeddings (one sgemm over all patches) + positions.
    func embed(_ pixels: Tensor) -> Tensor {
        let p = config.patchSize, side = config.gridSide, s = config.imageSize, c = config.channels
        let patches = Tensor(zeros: [side * side, c * p * p])
        for py in 0..<side {
            for px in 0..<side {
                let row = patches.data + (py * side + px) * c * p * p
                for ch in 0..<c {
                    for ky in 0..<p {
                        let src = pixels.data + ch * s * s + (py * p + ky) * s + px * p
                        (row + (ch * p + ky) * p).update(from: src, count: p)
                    }
                }
            }
        }
        let patchEmbeddings = patchEmbedding(patches)
        let embeddings = concatRows([classEmbedding.reshaped([1, config.hiddenSize]), patchEmbeddings])
        addInPlace(embeddings, positionEmbedding)
        return embeddings
    }

    func forward(_ layer: Layer, _ hidden: Tensor) -> Tensor {
        let x = layer.norm1(hidden)
        let q = layer.q(x), k = layer.k(x), v = layer.v(x)
        let heads = config.heads, headDim = config.hiddenSize / heads
        let attended = multiHeadAttention(queries: q, keys: k.data, values: v.data, keyCount: k.rows,
                                          heads: heads, kvHeads: heads, headDim: headDim, causalOffset: nil)
        let h = add(hidden, layer.out(attended))
        let mlp = layer.fc2(activate(layer.fc1(layer.norm2(h)), activation))
        addInPlace(h, mlp)
        return h
    }
}

public enum EncoderError: LocalizedError {
    case badLayer(encoder: String, layer: Int, count: Int)
    case badInput(encoder: String, expected: [Int], found: [Int])
    public var errorDescription: String? {
        switch self {
        case let .badLayer(encoder, layer, count):
            return "encoder '\(encoder)': feature_layer \(layer) is out of range (it has \(count) hidden states: \(-count)...\(count - 1))"
        case let .badInput(encoder, expected, found):
            return "encoder '\(encoder)': input has shape \(found), expected \(expected)"
        }
    }
}
