import Chimera
import Foundation

/// The families that ship with Chimera, by exact name.
public enum BuiltinFamilies {
    public static func all() -> [ComponentFamily] {
        [
            ComponentFamily(
                name: "clip-vision", kind: .encoder,
                summary: "CLIP ViT vision tower (transformers CLIPVisionModel)",
                validate: { try CLIPVisionConfig.validate($0) },
                create: { manifest, context in
                    try CLIPVisionEncoder(manifest: manifest, weights: try requireWeights(manifest, context))
                }),
            ComponentFamily(
                name: "siglip-vision", kind: .encoder,
                summary: "SigLIP ViT vision tower (transformers SiglipVisionModel; the pooling head is not used)",
                validate: { try SigLIPVisionConfig.validate($0) },
                create: { manifest, context in
                    try SigLIPVisionEncoder(manifest: manifest, weights: try requireWeights(manifest, context))
                }),
            ComponentFamily(
                name: "linear", kind: .connector, summary: "one linear layer (TinyLLaVA 'linear')",
                validate: { _ = try $0.decodeConfig(MLPConnectorConfig.self) },
                create: { manifest, context in try MLPConnector(manifest: manifest, context: context, depthOverride: 1) }),
            ComponentFamily(
                name: "mlp", kind: .connector,
                summary: "N linear layers with an activation between (LLaVA projector, TinyLLaVA mlp{N}x_gelu)",
                validate: { _ = try $0.decodeConfig(MLPConnectorConfig.self) },
                create: { manifest, context in try MLPConnector(manifest: manifest, context: context) }),
            ComponentFamily(
                name: "resampler", kind: .connector,
                summary: "Perceiver resampler (TinyLLaVA 'resampler'): any token count in, num_queries out",
                validate: { _ = try $0.decodeConfig(ResamplerConfig.self) },
                connectorTokens: { manifest, tokens in
                    guard tokens > 0 else { return nil }
                    return (try? manifest.decodeConfig(ResamplerConfig.self))?.numQueries
                },
                create: { manifest, context in
                    try ResamplerConnector(manifest: manifest, weights: try requireWeights(manifest, context), context: context)
                }),
            ComponentFamily(
                name: "ldpv2", kind: .connector,
                summary: "MobileVLM V2 LDPNetV2Projector: MLP, adaptive average pooling to a grid (576 → 144), PEG",
                validate: { _ = try $0.decodeConfig(LDPv2Config.self) },
                connectorTokens: { manifest, tokens in (try? manifest.decodeConfig(LDPv2Config.self))?.outputTokens(tokens) },
                create: { manifest, context in
                    try LDPv2Connector(manifest: manifest, weights: try requireWeights(manifest, context), context: context)
                }),
            ComponentFamily(
                name: "pixel-shuffle", kind: .connector,
                summary: "pixel shuffle by factor f then a linear (nanoVLM / Idefics3): N tokens → N/f²",
                validate: { _ = try $0.decodeConfig(PixelShuffleConfig.self) },
                connectorTokens: { manifest, tokens in (try? manifest.decodeConfig(PixelShuffleConfig.self))?.outputTokens(tokens) },
                create: { manifest, context in
                    try PixelShuffleConnector(manifest: manifest, weights: try requireWeights(manifest, context), context: context)
                }),
            ComponentFamily(
                name: "identity", kind: .connector, summary: "features passed through unchanged (widths must match)",
                validate: { try IdentityConfig.validate($0) },
                create: { manifest, context in try IdentityConnector(manifest: manifest, context: context) }),
            ComponentFamily(
                name: "llama", kind: .languageModel, summary: "Llama / TinyLlama (transformers LlamaForCausalLM)",
                validate: { _ = try $0.decodeConfig(LlamaConfig.self) },
                create: { manifest, context in
                    try LlamaModel(manifest: manifest, weights: try requireWeights(manifest, context))
                }),
        ]
    }

    /// A registry holding the built-in families.
    public static func registry() -> FamilyRegistry {
        let registry = FamilyRegistry()
        for family in all() { try! registry.register(family) }  // names above are distinct
        return registry
    }

    static func requireWeights(_ manifest: ComponentManifest, _ context: ComponentBuildContext) throws -> ParameterLoader {
        guard let weights = context.weights else {
            throw ManifestError.invalid(file: manifest.origin, detail: "weights: required for \(manifest.kind.rawValue) '\(manifest.id)'")
        }
        return weights
    }
}
