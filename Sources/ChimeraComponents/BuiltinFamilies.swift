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
