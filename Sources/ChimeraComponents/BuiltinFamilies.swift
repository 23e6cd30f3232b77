import Chimera
import Foundation

/// The families that ship with Chimera, by exact name.
public enum BuiltinFamilies {
    public static func all() -> [ComponentFamily] {
        [
            visionTransformer("clip-vision", "CLIP ViT vision tower (transformers CLIPVisionModel)", CLIPVariant.self),
            visionTransformer("siglip-vision", "SigLIP ViT vision tower (transformers SiglipVisionModel; the pooling head is not used)",
                              SigLIPVariant.self),
            ComponentFamily(
                name: "linear", kind: .connector, summary: "one linear layer (TinyLLaVA 'linear')",
                validate: { _ = try $0.decodeConfig(MLPConnectorConfig.self) },
                create: { manifest, context in try MLPConnector(manifest: manifest, context: context, depthOverride: 1) }),
            ComponentFamily(
                name: "mlp", kind: .connector,
                summary: "N linear layers with an activation between (LLaVA projector, TinyLLaVA mlp{N}x_gelu)",
                validate: { _ = try $0.decodeConfig(MLPConnectorConfig.self) },
                create: { manifest, context in try MLPConnector(manifest: manifest, context: context) }),
            tokenChanging(
                "resampler", "Perceiver resampler (TinyLLaVA 'resampler'): any token count in, num_queries out",
                ResamplerConfig.self, ResamplerConnector.init),
            tokenChanging(
                "ldpv2", "MobileVLM V2 LDPNetV2Projector: MLP, adaptive average pooling to a grid (576 → 144), PEG",
                LDPv2Config.self, LDPv2Connector.init),
            tokenChanging(
                "pixel-shuffle", "pixel shuffle by factor f then a linear (nanoVLM / Idefics3): N tokens → N/f²",
                PixelShuffleConfig.self, PixelShuffleConnector.init),
            ComponentFamily(
                name: "identity", kind: .connector, summary: "features passed through unchanged (widths must match)",
                validate: { try IdentityConfig.validate($0) }, keepsWidth: true,
                create: { manifest, context in try IdentityConnector(manifest: manifest, context: context) }),
        ] + decoderFamilies.map { entry in
            func family<Config: DecoderFamilyConfig>(_ config: Config.Type) -> ComponentFamily { languageModel(entry.name, config, entry.summary) }
            return family(entry.config)
        }
    }

    /// The decoder-only language model families, each with the config its manifests hold.
    static let decoderFamilies: [(name: String, config: any DecoderFamilyConfig.Type, summary: String)] = [
        ("llama", LlamaConfig.self, "Llama / TinyLlama (transformers LlamaForCausalLM)"),
        ("qwen2", Qwen2Config.self, "Qwen2 / Qwen2.5 (transformers Qwen2ForCausalLM)"),
        ("gemma", GemmaConfig.self, "Gemma (transformers GemmaForCausalLM)"),
        ("phi", PhiConfig.self, "Phi-1/1.5/2 (transformers PhiForCausalLM)"),
        ("stablelm", StableLMConfig.self, "StableLM-2 (transformers StableLmForCausalLM)"),
    ]

    /// The architecture a built-in decoder family reads from `manifest` (nil for another family):
    /// what its config means once the family's defaults are applied.
    static func decoderArchitecture(_ manifest: ComponentManifest) throws -> DecoderArchitecture? {
        guard let config = decoderFamilies.first(where: { $0.name == manifest.family })?.config else { return nil }
        func read<Config: DecoderFamilyConfig>(_ config: Config.Type) throws -> DecoderArchitecture { try architecture(manifest, config) }
        return try read(config)
    }

    /// A decoder-only language model family: its config maps to a `DecoderTransformer` architecture.
    static func languageModel<Config: DecoderFamilyConfig>(_ name: String, _ config: Config.Type, _ summary: String) -> ComponentFamily {
        ComponentFamily(
            name: name, kind: .languageModel, summary: summary,
            validate: { manifest in _ = try architecture(manifest, config) },
            create: { manifest, context in
                try DecoderTransformer(manifest: manifest, architecture: try architecture(manifest, config),
                                       weights: try requireWeights(manifest, context))
            })
    }

    static func architecture<Config: DecoderFamilyConfig>(_ manifest: ComponentManifest, _ config: Config.Type) throws -> DecoderArchitecture {
        let decoded = try manifest.decodeConfig(config)
        // The family's checks across fields throw as decoding does: named by the manifest's file.
        do { return try decoded.architecture(for: manifest) } catch let error as DecodingError {
            throw ManifestError.invalid(file: manifest.originFile, detail: "config." + describe(error))
        }
    }

    /// A registry holding the built-in families.
    public static func registry() -> FamilyRegistry {
        let registry = FamilyRegistry()
        for family in all() { try! registry.register(family) }  // names above are distinct
        return registry
    }

    /// A ViT image encoder family (VisionTransformer.swift) of one variant.
    static func visionTransformer<Variant: VisionTransformerVariant>(_ name: String, _ summary: String,
                                                                     _ variant: Variant.Type) -> ComponentFamily {
        ComponentFamily(
            name: name, kind: .encoder, summary: summary,
            validate: { try VisionTransformerConfig<Variant>.validate($0) },
            hiddenStates: { manifest in (try? manifest.decodeConfig(VisionTransformerConfig<Variant>.self)).map { $0.layers + 1 } },
            create: { manifest, context in
                try VisionTransformerEncoder<Variant>(manifest: manifest, weights: try requireWeights(manifest, context))
            })
    }

    /// A connector family with weights whose config decides the token count (from the manifest alone).
    static func tokenChanging<Config: ConnectorTokenMapping>(
        _ name: String, _ summary: String, _ config: Config.Type,
        _ make: @escaping @Sendable (ComponentManifest, ParameterLoader, ComponentBuildContext) throws -> any Component
    ) -> ComponentFamily {
        ComponentFamily(
            name: name, kind: .connector, summary: summary,
            validate: { _ = try $0.decodeConfig(Config.self) },
            connectorTokens: { manifest, tokens in (try? manifest.decodeConfig(Config.self))?.outputTokens(tokens) },
            create: { manifest, context in try make(manifest, try requireWeights(manifest, context), context) })
    }

    static func requireWeights(_ manifest: ComponentManifest, _ context: ComponentBuildContext) throws -> ParameterLoader {
        guard let weights = context.weights else {
            throw ManifestError.invalid(file: manifest.originFile, detail: "weights: required for \(manifest.kind.rawValue) '\(manifest.id)'")
        }
        return weights
    }
}
