import Chimera
import ChimeraTensor
import Foundation

/// TinyLLaVA's Perceiver resampler (tinyllava/model/connector/resampler.py): learned latents
/// [num_queries, H] attend to the features (after a V→H linear) and to themselves, layer by
/// layer; any number of feature tokens in, num_queries tokens out. Weight names are TinyLLaVA's
/// below the module (`latents`, `linear`, `layers.i.0.{norm_media,norm_latents,to_q,to_kv,to_out}`,
/// `layers.i.1.{0,1,3}` for the feed-forward's LayerNorm and linears, `norm`); the manifest's
/// prefix is where the checkpoint keeps it (TinyLLaVA: "connector._connector.").
public struct ResamplerConfig: Codable, Sendable, ConnectorTokenMapping {
    public var numQueries: Int
    public var layers: Int
    /// TinyLLaVA fixes heads 8 × dim_head 64; other values are for other checkpoints.
    public var heads: Int = 8
    public var dimHead: Int = 64
    public var ffMult: Int = 4
    public var layerNormEps: Float = 1e-5

    enum CodingKeys: String, CodingKey, CaseIterable {
        case layers, heads
        case numQueries = "num_queries", dimHead = "dim_head", ffMult = "ff_mult", layerNormEps = "layer_norm_eps"
    }

    public init(from decoder: Decoder) throws {
        try rejectUnknown(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        numQueries = try c.decode(Int.self, forKey: .numQueries)
        layers = try c.decode(Int.self, forKey: .layers)
        heads = try c.decodeIfPresent(Int.self, forKey: .heads) ?? 8
        dimHead = try c.decodeIfPresent(Int.self, forKey: .dimHead) ?? 64
        ffMult = try c.decodeIfPresent(Int.self, forKey: .ffMult) ?? 4
        layerNormEps = try c.decodeIfPresent(Float.self, forKey: .layerNormEps) ?? 1e-5
        // Bounded so that heads × dim_head and ff_mult × width stay sizes a machine can hold.
        for (value, key, most) in [(numQueries, CodingKeys.numQueries, SizeLimits.tokens), (layers, .layers, SizeLimits.count), (heads, .heads, SizeLimits.count),
                                   (dimHead, .dimHead, SizeLimits.headDim), (ffMult, .ffMult, 64)] {
            try requireSize(value, key, most: most)
        }
    }

    func outputTokens(_ input: Int) -> Int? { input > 0 ? numQueries : nil }
}

public final class ResamplerConnector: Connector, @unchecked Sendable {
    public let manifest: ComponentManifest
    public let config: ResamplerConfig
    public let parameters: [(name: String, tensor: Tensor)]
    public let inputWidth: Int
    public let outputWidth: Int
    let latents: Tensor  // [num_queries, H]
    let input: LinearLayer
    let layers: [Layer]
    let norm: LayerNormLayer

    struct Layer {
        let normMedia, normLatents, ffNorm: LayerNormLayer
        let toQ, toKV, toOut, ffIn, ffOut: LinearLayer
    }

    public init(manifest: ComponentManifest, weights w: ParameterLoader, context: ComponentBuildContext) throws {
        self.manifest = manifest
        let config = try manifest.decodeConfig(ResamplerConfig.self)
        self.config = config
        (inputWidth, outputWidth) = try settledWidths(manifest, context)
        let h = outputWidth, inner = config.heads * config.dimHead, eps = config.layerNormEps
        latents = try w.tensor("latents", shape: [config.numQueries, h])
        input = try LinearLayer(w, "linear", input: inputWidth, output: h, bias: true)
        layers = try (0..<config.layers).map { i in
            let attn = w.scoped("layers.\(i).0."), ff = w.scoped("layers.\(i).1.")
            return Layer(
                normMedia: try LayerNormLayer(attn, "norm_media", width: h, eps: eps),
                normLatents: try LayerNormLayer(attn, "norm_latents", width: h, eps: eps),
                ffNorm: try LayerNormLayer(ff, "0", width: h, eps: eps),
                toQ: try LinearLayer(attn, "to_q", input: h, output: inner, bias: false),
                toKV: try LinearLayer(attn, "to_kv", input: h, output: 2 * inner, bias: false),
                toOut: try LinearLayer(attn, "to_out", input: inner, output: h, bias: false),
                ffIn: try LinearLayer(ff, "1", input: h, output: config.ffMult * h, bias: false),
                ffOut: try LinearLayer(ff, "3", input: config.ffMult * h, output: h, bias: false))
        }
        norm = try LayerNormLayer(w, "norm", width: h, eps: eps)
        parameters = w.loaded
    }

    public func outputTokens(forInputTokens inputTokens: Int) -> Int? { config.outputTokens(inputTokens) }

    public func forward(_ features: Tensor) throws -> Tensor {
        try checkWidth(features, inputWidth)
        guard features.rows > 0 else {
            throw ConnectorError.badTokens(connector: id, tokens: 0, reason: "the latents need at least one feature token to attend to")
        }
        let x = input(features)
        var latents = self.latents.copy()
        let inner = config.heads * config.dimHead
        for layer in layers {
            let normed = layer.normLatents(latents)
            let q = layer.toQ(normed)
            // Keys and values come from the features and the latents together.
            let kv = layer.toKV(concatRows([layer.normMedia(x), normed]))
            let keys = Tensor(zeros: [kv.rows, inner]), values = Tensor(zeros: [kv.rows, inner])
            for r in 0..<kv.rows {
                (keys.data + r * inner).update(from: kv.data + r * 2 * inner, count: inner)
                (values.data + r * inner).update(from: kv.data + r * 2 * inner + inner, count: inner)
            }
            let attended = multiHeadAttention(queries: q, keys: keys.data, values: values.data, keyCount: kv.rows,
                                              heads: config.heads, kvHeads: config.heads, headDim: config.dimHead, causalOffset: nil)
            latents = add(layer.toOut(attended), latents)
            addInPlace(latents, layer.ffOut(activate(layer.ffIn(layer.ffNorm(latents)), .gelu)))
        }
        return norm(latents)
    }
}
