import Chimera
import ChimeraTensor
import Foundation

/// StableLM-2 (and StableLM-3B-4E1T), as transformers' StableLmForCausalLM: LayerNorms with bias,
/// optional q/k/v bias, SwiGLU, partial rotary (0.25), optional per-head q/k LayerNorm and
/// optional parallel residual.
public struct StableLMConfig: DecoderFamilyConfig {
    public var shape: DecoderShape
    public var layerNormEps: Float
    public var hiddenAct: String
    public var partialRotaryFactor: Double
    public var useQKVBias: Bool
    public var qkLayernorm: Bool
    public var useParallelResidual: Bool

    enum CodingKeys: String, CodingKey, CaseIterable {
        case layerNormEps = "layer_norm_eps", hiddenAct = "hidden_act", partialRotaryFactor = "partial_rotary_factor"
        case useQKVBias = "use_qkv_bias", qkLayernorm = "qk_layernorm", useParallelResidual = "use_parallel_residual"
    }

    public init(from decoder: Decoder) throws {
        shape = try DecoderShape(from: decoder, familyKeys: CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        layerNormEps = try c.decodeIfPresent(Float.self, forKey: .layerNormEps) ?? 1e-5
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        partialRotaryFactor = try c.decodeIfPresent(Double.self, forKey: .partialRotaryFactor) ?? 0.25
        useQKVBias = try c.decodeIfPresent(Bool.self, forKey: .useQKVBias) ?? false
        qkLayernorm = try c.decodeIfPresent(Bool.self, forKey: .qkLayernorm) ?? false
        useParallelResidual = try c.decodeIfPresent(Bool.self, forKey: .useParallelResidual) ?? false
        _ = try activation(hiddenAct, CodingKeys.hiddenAct)
        _ = try shape.rotaryDim(factor: partialRotaryFactor, key: CodingKeys.partialRotaryFactor)
        // transformers' StableLmAttention takes head_dim as hidden_size / heads.
        try require(shape.headDim == nil || shape.headDim == shape.hiddenSize / shape.heads, DecoderShape.CodingKeys.headDim,
                    "stablelm's head_dim is hidden_size / heads (\(shape.hiddenSize / shape.heads)), found \(shape.headDim ?? 0)")
    }

    public func architecture(for manifest: ComponentManifest) throws -> DecoderArchitecture {
        var a = try shape.architecture(norm: .layer, normEps: layerNormEps, mlp: .gated(try activation(hiddenAct, CodingKeys.hiddenAct)),
                                   residual: useParallelResidual ? .parallel : .sequential,
                                   rotaryDim: try shape.rotaryDim(factor: partialRotaryFactor, key: CodingKeys.partialRotaryFactor))
        a.qkvBias = useQKVBias
        a.qkNorm = qkLayernorm
        return a
    }
}
