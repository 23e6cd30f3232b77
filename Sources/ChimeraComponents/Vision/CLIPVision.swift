import Chimera

/// CLIP vision transformer, as transformers' CLIPVisionModel: conv patch embedding without bias,
/// class token, learned positions, pre-layernorm ("pre_layrnorm"), quick_gelu MLP, eps 1e-5.
/// hidden_states[0] is taken after the pre-layernorm. The shared ViT is in VisionTransformer.swift.
public enum CLIPVariant: VisionTransformerVariant {
    public static let defaultLayerNormEps: Float = 1e-5
    public static let defaultActivation = "quick_gelu"
    public static let classToken = true
    public static let preNorm: String? = "pre_layrnorm"
    public static let patchBias = false
}

public typealias CLIPVisionConfig = VisionTransformerConfig<CLIPVariant>
public typealias CLIPVisionEncoder = VisionTransformerEncoder<CLIPVariant>
