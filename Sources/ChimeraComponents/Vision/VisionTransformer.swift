import Chimera
import ChimeraIO
import ChimeraTensor
import Foundation

// The ViT shared by the CLIP and SigLIP towers: the same config keys, conv patch embedding,
// learned positions, pre-norm encoder layers (layer_norm1 → attention → layer_norm2 → MLP) and
// the same weight names. What differs (class token, pre-layernorm, patch bias, default eps and
// activation) is a `VisionTransformerVariant`; CLIPVision.swift and SigLIPVision.swift declare theirs.

/// What sets one ViT family apart from another.
public protocol VisionTransformerVariant: Sendable {
    static var defaultLayerNormEps: Float { get }
    static var defaultActivation: String { get }
    /// A learned class token ("embeddings.class_embedding") is prepended to the patches.
    static var classToken: Bool { get }
    /// Name of the layernorm applied to the embeddings (CLIP's "pre_layrnorm"), nil when there is none.
    static var preNorm: String? { get }
    static var patchBias: Bool { get }
}

// MARK: - Configuration

public struct VisionTransformerConfig<Variant: VisionTransformerVariant>: Codable, Sendable {
    public var hiddenSize: Int
    public var layers: Int
    public var heads: Int
    public var intermediateSize: Int
    public var imageSize: Int
    public var patchSize: Int
    public var layerNormEps: Float = Variant.defaultLayerNormEps
    public var hiddenAct: String = Variant.defaultActivation
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
        layerNormEps = try c.decodeIfPresent(Float.self, forKey: .layerNormEps) ?? Variant.defaultLayerNormEps
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? Variant.defaultActivation
        channels = try c.decodeIfPresent(Int.self, forKey: .channels) ?? 3
        // Bounded so that the token count (grid side²) and the pixel buffers cannot overflow.
        for (value, key, most) in [(hiddenSize, CodingKeys.hiddenSize, SizeLimits.width), (layers, .layers, SizeLimits.count), (heads, .heads, SizeLimits.count),
                                   (intermediateSize, .intermediateSize, SizeLimits.intermediate), (imageSize, .imageSize, ImagePreprocessing.maxSide),
                                   (patchSize, .patchSize, ImagePreprocessing.maxSide)] {
            try requireSize(value, key, most: most)
        }
        try require(channels == 3, CodingKeys.channels, "must be 3 (images are preprocessed to RGB), found \(channels)")
        try require(hiddenSize % heads == 0, CodingKeys.heads, "hidden_size \(hiddenSize) is not divisible by heads \(heads)")
        // Like the stride-patch Conv2d, a remainder of pixels is dropped (SigLIP so400m: 384 / 14 → 27 × 27).
        try require(imageSize >= patchSize, CodingKeys.patchSize, "image_size \(imageSize) is smaller than patch_size \(patchSize)")
        try require(Activation(configName: hiddenAct) != nil, CodingKeys.hiddenAct, "unsupported activation '\(hiddenAct)'")
    }

    var gridSide: Int { imageSize / patchSize }
    var tokens: Int { gridSide * gridSide + (Variant.classToken ? 1 : 0) }
    /// What one hidden state holds, as a manifest's `output` must say.
    public var output: TokenContract {
        TokenContract(width: hiddenSize, tokens: tokens, grid: [gridSide, gridSide], classToken: Variant.classToken)
    }

    /// The family's `validate`: the config decodes, the manifest's `output` and `preprocess` agree with it.
    static func validate(_ manifest: ComponentManifest) throws {
        let config = try manifest.decodeConfig(Self.self)
        _ = try config.preprocessing(of: manifest)
        let expected = config.output
        if let output = manifest.output, output.width != expected.width || output.tokens != expected.tokens {
            throw ManifestError.invalid(file: manifest.originFile, detail:
                "output: {width \(output.width), tokens \(output.tokens)} disagrees with config, which gives {width \(expected.width), tokens \(expected.tokens)}")
        }
        if let classToken = manifest.output?.classToken, classToken != Variant.classToken {
            throw ManifestError.invalid(file: manifest.originFile, detail:
                "output.class_token: \(classToken) disagrees with family '\(manifest.family)', which has \(Variant.classToken ? "a" : "no") class token")
        }
        if let grid = manifest.output?.grid, grid != expected.grid {
            throw ManifestError.invalid(file: manifest.originFile, detail: "output.grid: \(grid) disagrees with config, which gives \(expected.grid ?? [])")
        }
    }

    /// The manifest's preprocess, which must give the image_size x image_size pixels the patch
    /// embedding takes (else an image would be resized, perhaps to gigabytes, only to be refused).
    func preprocessing(of manifest: ComponentManifest) throws -> ImagePreprocessing {
        guard let preprocessing = manifest.preprocess else {
            throw ManifestError.invalid(file: manifest.origin, detail: "preprocess: required for image encoders")
        }
        guard let side = preprocessing.squareSide, side == imageSize else {
            let found = preprocessing.squareSide.map { "\($0) x \($0)" } ?? "images of any aspect ratio (shortest_edge with neither crop_size nor pad_to_square)"
            throw ManifestError.invalid(file: manifest.origin, detail:
                "preprocess: must give \(imageSize) x \(imageSize) pixels (config.image_size), gives \(found)")
        }
        return preprocessing
    }
}

// MARK: - Building blocks

/// Conv2d with kernel = stride = patch, done as one sgemm over the flattened patches.
struct PatchEmbedding: Sendable {
    let projection: LinearLayer  // the conv kernel flattened to [hidden, channels * patch * patch]
    let patch: Int, channels: Int

    init(_ w: ParameterLoader, hidden: Int, channels: Int, patch: Int, bias: Bool) throws {
        self.patch = patch; self.channels = channels
        let weight = try w.tensor("embeddings.patch_embedding.weight", shape: [hidden, channels, patch, patch])
        projection = LinearLayer(weight: weight.reshaped([hidden, channels * patch * patch]),
                                 bias: bias ? try w.tensor("embeddings.patch_embedding.bias", shape: [hidden]) : nil)
    }

    /// Pixels [channels, S, S] → [(S/patch)², hidden], patches in row-major grid order.
    func callAsFunction(_ pixels: Tensor) -> Tensor {
        let s = pixels.shape[1]
        return projection(gatherBlocks(pixels.data, planes: channels, height: s, width: s, blockHeight: patch, blockWidth: patch))
    }
}

/// One encoder layer: x + attn(layer_norm1(x)), then h + fc2(act(fc1(layer_norm2(h)))).
struct ViTEncoderLayer: Sendable {
    let norm1, norm2: LayerNormLayer
    let q, k, v, out, fc1, fc2: LinearLayer

    init(_ l: ParameterLoader, hidden h: Int, intermediate: Int, eps: Float) throws {
        norm1 = try LayerNormLayer(l, "layer_norm1", width: h, eps: eps)
        norm2 = try LayerNormLayer(l, "layer_norm2", width: h, eps: eps)
        q = try LinearLayer(l, "self_attn.q_proj", input: h, output: h, bias: true)
        k = try LinearLayer(l, "self_attn.k_proj", input: h, output: h, bias: true)
        v = try LinearLayer(l, "self_attn.v_proj", input: h, output: h, bias: true)
        out = try LinearLayer(l, "self_attn.out_proj", input: h, output: h, bias: true)
        fc1 = try LinearLayer(l, "mlp.fc1", input: h, output: intermediate, bias: true)
        fc2 = try LinearLayer(l, "mlp.fc2", input: intermediate, output: h, bias: true)
    }

    /// Runs the layer on the residual stream `hidden` [tokens, width] in place. Intermediate
    /// activations live in `workspace`, so a stack of layers allocates them once; projection biases
    /// are added in the fused kernels that follow each product (bias + GELU, bias + residual + norm).
    func callAsFunction(_ hidden: Tensor, heads: Int, activation: Activation, workspace: Workspace) {
        let tokens = hidden.rows, width = hidden.columns
        let x = workspace.tensor("vit.normed", rows: tokens, columns: width)
        layerNorm(hidden, weight: norm1.weight, bias: norm1.bias, eps: norm1.eps, into: x)
        let q = workspace.tensor("vit.q", rows: tokens, columns: width)
        let k = workspace.tensor("vit.k", rows: tokens, columns: width)
        let v = workspace.tensor("vit.v", rows: tokens, columns: width)
        LinearLayer.apply(x, (self.q, q), (self.k, k), (self.v, v))
        let attended = workspace.tensor("vit.attended", rows: tokens, columns: width)
        multiHeadAttention(queries: q, keys: k.data, values: v.data, keyCount: tokens, heads: heads, kvHeads: heads,
                           headDim: width / heads, causalOffset: nil,
                           scores: workspace.scratch("vit.scores", count: tokens * tokens), into: attended)
        let projected = workspace.tensor("vit.projected", rows: tokens, columns: width)
        out.matrix.apply(attended, bias: nil, into: projected)
        residualLayerNorm(hidden, adding: projected, bias: out.bias, norm: norm2.parameters, into: x)
        let inner = workspace.tensor("vit.inner", rows: tokens, columns: fc1.outputWidth)
        fc1.matrix.apply(x, bias: nil, into: inner)
        biasActivateInPlace(inner, bias: fc1.bias, activation)
        fc2.matrix.apply(inner, bias: nil, into: projected)
        residualLayerNorm(hidden, adding: projected, bias: fc2.bias)
    }
}

// MARK: - Encoder

/// A ViT image encoder of one variant (CLIPVisionModel, SiglipVisionModel). Heads on top of the
/// encoder (post_layernorm, SigLIP's attention-pooling head) are not read: features are hidden states.
public final class VisionTransformerEncoder<Variant: VisionTransformerVariant>: ModalityEncoder, @unchecked Sendable {
    public let manifest: ComponentManifest
    public let config: VisionTransformerConfig<Variant>
    public let parameters: [(name: String, tensor: Tensor)]
    let preprocessing: ImagePreprocessing
    let patchEmbedding: PatchEmbedding
    let classEmbedding: Tensor?   // [hidden]
    let positionEmbedding: Tensor // [tokens, hidden]
    let preNorm: LayerNormLayer?
    let layers: [ViTEncoderLayer]
    let activation: Activation

    public init(manifest: ComponentManifest, weights w: ParameterLoader) throws {
        self.manifest = manifest
        let config = try manifest.decodeConfig(VisionTransformerConfig<Variant>.self)
        self.config = config
        self.preprocessing = try config.preprocessing(of: manifest)
        activation = Activation(configName: config.hiddenAct)!
        let h = config.hiddenSize
        patchEmbedding = try PatchEmbedding(w, hidden: h, channels: config.channels, patch: config.patchSize, bias: Variant.patchBias)
        classEmbedding = Variant.classToken ? try w.tensor("embeddings.class_embedding", shape: [h]) : nil
        positionEmbedding = try w.tensor("embeddings.position_embedding.weight", shape: [config.tokens, h])
        preNorm = try Variant.preNorm.map { try LayerNormLayer(w, $0, width: h, eps: config.layerNormEps) }
        layers = try (0..<config.layers).map { i in
            try ViTEncoderLayer(w.scoped("encoder.layers.\(i)."), hidden: h, intermediate: config.intermediateSize, eps: config.layerNormEps)
        }
        parameters = w.loaded
    }

    public var hiddenStateCount: Int { config.layers + 1 }
    public var output: TokenContract { config.output }

    public func prepareInput(contentsOf url: URL) throws -> Tensor {
        let image = try ImageDecoder.decode(contentsOf: url)
        try preprocessing.checkIntermediateSize(width: image.width, height: image.height, file: url.path)
        return preprocessing.pixelValues(preprocessing.inputImage(image))
    }

    /// Hidden state `layer` (0 = embeddings, after the pre-layernorm when there is one; negative
    /// counts from the end), before post_layernorm.
    public func hiddenState(_ pixels: Tensor, layer: Int) throws -> Tensor {
        guard let index = hiddenStateIndex(layer, count: hiddenStateCount) else {
            throw EncoderError.badLayer(encoder: id, layer: layer, count: hiddenStateCount)
        }
        let s = config.imageSize
        guard pixels.shape == [config.channels, s, s] else {
            throw EncoderError.badInput(encoder: id, expected: [config.channels, s, s], found: pixels.shape)
        }
        var hidden = embed(pixels)
        if let preNorm { hidden = preNorm(hidden) }
        // Fresh per call (the forward pass stays a function of its input), shared by the layers.
        let workspace = Workspace()
        for l in layers.prefix(index) { l(hidden, heads: config.heads, activation: activation, workspace: workspace) }
        return hidden
    }

    /// [class token +] patch embeddings + positions.
    func embed(_ pixels: Tensor) -> Tensor {
        var embeddings = patchEmbedding(pixels)
        if let classEmbedding {
            embeddings = concatRows([classEmbedding.reshaped([1, config.hiddenSize]), embeddings])
        }
        addInPlace(embeddings, positionEmbedding)
        return embeddings
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
