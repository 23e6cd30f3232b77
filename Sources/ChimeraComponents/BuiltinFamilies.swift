import Chimera
import Foundation

/// The families that ship with Chimera, by exact name.
public enum BuiltinFamilies {
    public static func all() -> [ComponentFamily] {
        [
            ComponentFamily(
                name: "clip-vision", kind: .encoder,
                summary: "CLIP ViT vision tower (transformers CLIPVisionModel)",
                validate: { manifest in
                    let config = try manifest.decodeConfig(CLIPVisionConfig.self)
                    let side = config.imageSize / config.patchSize
                    let expected = TokenContract(width: config.hiddenSize, tokens: side * side + 1, grid: [side, side])
                    if let output = manifest.output, output.width != expected.width || output.tokens != expected.tokens {
                        throw ManifestError.invalid(file: manifest.origin, detail:
                            "output: {width \(output.width), tokens \(output.tokens)} disagrees with config, which gives {width \(expected.width), tokens \(expected.tokens)}")
                    }
                },
                create: { manifest, context in
                    try CLIPVisionEncoder(manifest: manifest, weights: try requireWeights(manifest, context))
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
            languageModel("llama", LlamaConfig.self, "Llama / TinyLlama (transformers LlamaForCausalLM)"),
            languageModel("qwen2", Qwen2Config.self, "Qwen2 / Qwen2.5 (transformers Qwen2ForCausalLM)"),
            languageModel("gemma", GemmaConfig.self, "Gemma (transformers GemmaForCausalLM)"),
            languageModel("phi", PhiConfig.self, "Phi-1/1.5/2 (transformers PhiForCausalLM)"),
            languageModel("stablelm", StableLMConfig.self, "StableLM-2 (transformers StableLmForCausalLM)"),
        ]
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
        try manifest.decodeConfig(config).architecture(for: manifest)
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
