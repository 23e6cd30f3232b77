import Chimera

/// SigLIP vision transformer, as transformers' SiglipVisionModel (base and so400m shapes): conv
/// patch embedding with bias, learned positions, no class token, no pre-layernorm,
/// gelu_pytorch_tanh MLP, eps 1e-6. hidden_states[0] is the embeddings. The attention-pooling
/// head and post_layernorm are not read. The shared ViT is in VisionTransformer.swift.
public enum SigLIPVariant: VisionTransformerVariant {
    public static let defaultLayerNormEps: Float = 1e-6
    public static let defaultActivation = "gelu_pytorch_tanh"
    public static let classToken = false
    public static let preNorm: String? = nil
    public static let patchBias = true
}

public typealias SigLIPVisionConfig = VisionTransformerConfig<SigLIPVariant>
public typealias SigLIPVisionEncoder = VisionTransformerEncoder<SigLIPVariant>
