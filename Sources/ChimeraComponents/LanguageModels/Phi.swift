import Chimera
import ChimeraTensor
import Foundation

/// Phi-1/1.5/2, as transformers' PhiForCausalLM: one LayerNorm feeds attention and the MLP in
/// parallel, every linear has a bias (lm_head too), plain fc1 → gelu_new → fc2 MLP, partial rotary.
public struct PhiConfig: DecoderFamilyConfig {
    public var shape: DecoderShape
    public var layerNormEps: Float
    public var hiddenAct: String
    public var partialRotaryFactor: Double
    public var qkLayernorm: Bool
    /// PhiForCausalLM's lm_head has a bias; LLaVA wraps Phi with its own bias-free lm_head.
    public var lmHeadBias: Bool

    enum CodingKeys: String, CodingKey, CaseIterable {
        case layerNormEps = "layer_norm_eps", hiddenAct = "hidden_act", partialRotaryFactor = "partial_rotary_factor"
        case qkLayernorm = "qk_layernorm", lmHeadBias = "lm_head_bias"
    }

    public init(from decoder: Decoder) throws {
        shape = try DecoderShape(from: decoder, familyKeys: CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        layerNormEps = try c.decodeIfPresent(Float.self, forKey: .layerNormEps) ?? 1e-5
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "gelu_new"
        partialRotaryFactor = try c.decodeIfPresent(Double.self, forKey: .partialRotaryFactor) ?? 0.5
        qkLayernorm = try c.decodeIfPresent(Bool.self, forKey: .qkLayernorm) ?? false
        lmHeadBias = try c.decodeIfPresent(Bool.self, forKey: .lmHeadBias) ?? true
        _ = try activation(hiddenAct, CodingKeys.hiddenAct)
        _ = try shape.rotaryDim(factor: partialRotaryFactor, key: CodingKeys.partialRotaryFactor)
        // Phi's qk_layernorm is one LayerNorm (with bias) shared by all heads; no released checkpoint uses it.
        try require(!qkLayernorm, CodingKeys.qkLayernorm, "true is not implemented for phi (Phi-1/1.5/2 use false)")
    }

    public func architecture(for manifest: ComponentManifest) throws -> DecoderArchitecture {
        var a = try shape.architecture(norm: .layer, normEps: layerNormEps, mlp: .plain(try activation(hiddenAct, CodingKeys.hiddenAct)),
                                   residual: .parallel,
                                   rotaryDim: try shape.rotaryDim(factor: partialRotaryFactor, key: CodingKeys.partialRotaryFactor))
        a.qkvBias = true
        a.outputBias = true
        a.mlpBias = true
        a.lmHeadBias = lmHeadBias
        a.outputProjectionName = "self_attn.dense"
        a.finalNormName = "model.final_layernorm"
        return a
    }
}
