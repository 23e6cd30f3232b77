import Chimera
import ChimeraTensor
import Foundation

/// Llama / TinyLlama, as transformers' LlamaForCausalLM: RMSNorm, SwiGLU MLP, grouped-query
/// attention, rotate-half RoPE.
public struct LlamaConfig: DecoderFamilyConfig {
    public var shape: DecoderShape
    public var rmsNormEps: Float
    public var attentionBias: Bool
    public var mlpBias: Bool
    public var hiddenAct: String

    enum CodingKeys: String, CodingKey, CaseIterable {
        case rmsNormEps = "rms_norm_eps", attentionBias = "attention_bias", mlpBias = "mlp_bias", hiddenAct = "hidden_act"
    }

    public init(from decoder: Decoder) throws {
        shape = try DecoderShape(from: decoder, familyKeys: CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decodeIfPresent(Float.self, forKey: .rmsNormEps) ?? 1e-6
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        mlpBias = try c.decodeIfPresent(Bool.self, forKey: .mlpBias) ?? false
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        _ = try activation(hiddenAct, CodingKeys.hiddenAct)
    }

    public func architecture(for manifest: ComponentManifest) throws -> DecoderArchitecture {
        var a = try shape.architecture(norm: .rms(weightOffset: 0), normEps: rmsNormEps, mlp: .gated(try activation(hiddenAct, CodingKeys.hiddenAct)))
        a.qkvBias = attentionBias
        a.outputBias = attentionBias
        a.mlpBias = mlpBias
        return a
    }
}
