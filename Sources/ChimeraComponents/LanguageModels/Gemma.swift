import Chimera
import ChimeraTensor
import Foundation

/// Gemma (1), as transformers' GemmaForCausalLM: embeddings scaled by sqrt(hidden_size), RMSNorm
/// with weight (1 + w), GeGLU (tanh GELU) MLP, explicit head_dim, tied embeddings.
///
/// Where the scale applies differs between transformers versions: 4.x scales `inputs_embeds` inside
/// GemmaModel (image features spliced by LLaVA get scaled; TinyLLaVA-Gemma was trained so), 5.x
/// scales in the embedding layer (spliced features are not). `scale_spliced_features` says which.
public struct GemmaConfig: DecoderFamilyConfig {
    public var shape: DecoderShape
    public var rmsNormEps: Float
    public var hiddenAct: String
    public var attentionBias: Bool
    public var scaleSplicedFeatures: Bool

    enum CodingKeys: String, CodingKey, CaseIterable {
        case rmsNormEps = "rms_norm_eps", hiddenAct = "hidden_act", attentionBias = "attention_bias"
        case scaleSplicedFeatures = "scale_spliced_features"
    }

    public init(from decoder: Decoder) throws {
        shape = try DecoderShape(from: decoder, familyKeys: CodingKeys.self, defaultTied: true)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decodeIfPresent(Float.self, forKey: .rmsNormEps) ?? 1e-6
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "gelu_pytorch_tanh"
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        scaleSplicedFeatures = try c.decodeIfPresent(Bool.self, forKey: .scaleSplicedFeatures) ?? true
        _ = try activation(hiddenAct, CodingKeys.hiddenAct)
    }

    public func architecture(for manifest: ComponentManifest) throws -> DecoderArchitecture {
        var a = try shape.architecture(norm: .rms(weightOffset: 1), normEps: rmsNormEps, mlp: .gated(try activation(hiddenAct, CodingKeys.hiddenAct)))
        a.qkvBias = attentionBias
        a.outputBias = attentionBias
        // transformers makes the normalizer a tensor of the hidden states' dtype: float32 here.
        a.embeddingScale = Float(Double(shape.hiddenSize).squareRoot())
        a.scaleSplicedFeatures = scaleSplicedFeatures
        return a
    }
}
