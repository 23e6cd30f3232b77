import Chimera
import ChimeraTensor
import Foundation

// Building blocks plugin encoders share: nn.Linear, nn.LayerNorm and a pre-norm transformer
// encoder layer with Whisper's weight names (self_attn.{q,k,v,out}_proj, self_attn_layer_norm,
// fc1, fc2, final_layer_norm), which the sensor encoder reuses as its own layout.

/// A PyTorch nn.Linear: weight [out, in], optional bias [out].
public struct PluginLinear: Sendable {
    public let weight: Tensor
    public let bias: Tensor?
    public init(_ loader: ParameterLoader, _ name: String, input: Int, output: Int, bias: Bool = true) throws {
        weight = try loader.tensor(name + ".weight", shape: [output, input])
        self.bias = bias ? try loader.tensor(name + ".bias", shape: [output]) : nil
    }
    public func callAsFunction(_ x: Tensor) -> Tensor { linear(x, weight: weight, bias: bias) }
}

public struct PluginLayerNorm: Sendable {
    public let weight: Tensor
    public let bias: Tensor
    public let eps: Float
    public init(_ loader: ParameterLoader, _ name: String, width: Int, eps: Float) throws {
        weight = try loader.tensor(name + ".weight", shape: [width])
        bias = try loader.tensor(name + ".bias", shape: [width])
        self.eps = eps
    }
    public func callAsFunction(_ x: Tensor) -> Tensor { layerNorm(x, weight: weight, bias: bias, eps: eps) }
}

/// x + attn(ln1(x)), then x + fc2(act(fc1(ln2(x)))); bidirectional attention, no key bias (Whisper).
public struct PreNormEncoderLayer: Sendable {
    let q, k, v, out, fc1, fc2: PluginLinear
    let attentionNorm, mlpNorm: PluginLayerNorm
    let heads: Int
    let activation: Activation

    public init(_ loader: ParameterLoader, width: Int, heads: Int, intermediate: Int, eps: Float, activation: Activation) throws {
        let a = loader.scoped("self_attn.")
        q = try PluginLinear(a, "q_proj", input: width, output: width)
        k = try PluginLinear(a, "k_proj", input: width, output: width, bias: false)
        v = try PluginLinear(a, "v_proj", input: width, output: width)
        out = try PluginLinear(a, "out_proj", input: width, output: width)
        attentionNorm = try PluginLayerNorm(loader, "self_attn_layer_norm", width: width, eps: eps)
        fc1 = try PluginLinear(loader, "fc1", input: width, output: intermediate)
        fc2 = try PluginLinear(loader, "fc2", input: intermediate, output: width)
        mlpNorm = try PluginLayerNorm(loader, "final_layer_norm", width: width, eps: eps)
        self.heads = heads; self.activation = activation
    }

    /// Layers `layers.0.` ... `layers.{count-1}.` of an encoder.
    public static func stack(_ loader: ParameterLoader, count: Int, width: Int, heads: Int, intermediate: Int, eps: Float,
                             activation: Activation) throws -> [PreNormEncoderLayer] {
        try (0..<count).map {
            try PreNormEncoderLayer(loader.scoped("layers.\($0)."), width: width, heads: heads, intermediate: intermediate, eps: eps, activation: activation)
        }
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        let h = attentionNorm(x)
        let queries = q(h), keys = k(h), values = v(h)
        let attended = multiHeadAttention(queries: queries, keys: keys.data, values: values.data, keyCount: keys.rows,
                                          heads: heads, kvHeads: heads, headDim: x.columns / heads, causalOffset: nil)
        let y = add(x, out(attended))
        return add(y, fc2(activate(fc1(mlpNorm(y)), activation)))
    }
}

/// Hidden states as transformers returns them for Whisper-style encoders: index 0 is the input to
/// the first layer, index i the output of layer i, and the last one passes the final layernorm.
public func encoderHiddenState(_ embeddings: Tensor, layers: [PreNormEncoderLayer], finalNorm: PluginLayerNorm, index: Int) -> Tensor {
    var h = embeddings
    for layer in layers.prefix(index) { h = layer(h) }
    return index == layers.count ? finalNorm(h) : h
}

/// Negative indices count from the end of layers + 1 hidden states.
public func hiddenStateIndex(_ layer: Int, count: Int, component: String) throws -> Int {
    guard let index = hiddenStateIndex(layer, count: count) else { throw PluginKitError("\(component): hidden state \(layer) is outside 0..<\(count)") }
    return index
}

extension ComponentFamily {
    /// An encoder family whose config decides its output: `validate` decodes the config and checks
    /// the manifest's declared `output` against it; `create` requires weights.
    public static func encoder<Config: Decodable & Sendable>(
        name: String, summary: String, config: Config.Type, output: @escaping @Sendable (Config) -> TokenContract,
        create: @escaping @Sendable (ComponentManifest, ParameterLoader) throws -> any ModalityEncoder
    ) -> ComponentFamily {
        ComponentFamily(
            name: name, kind: .encoder, summary: summary,
            validate: { manifest in
                let expected = output(try manifest.decodeConfig(Config.self))
                if let declared = manifest.output, declared.width != expected.width || declared.tokens != expected.tokens {
                    throw ManifestError.invalid(file: manifest.origin, detail:
                        "output: {width \(declared.width), tokens \(declared.tokens)} disagrees with config, which gives {width \(expected.width), tokens \(expected.tokens)}")
                }
            },
            create: { manifest, context in
                guard let weights = context.weights else { throw PluginKitError("\(manifest.origin): weights: required for encoder '\(manifest.id)'") }
                return try create(manifest, weights)
            })
    }
}
