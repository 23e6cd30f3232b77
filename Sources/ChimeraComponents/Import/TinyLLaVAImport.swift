import Chimera
import ChimeraIO
import Foundation

/// TinyLLaVA_Factory checkpoints (config.json model_type "tinyllava"): keys language_model.*,
/// vision_tower._vision_tower.*, connector._connector.*; a textual <image> (IMAGE_TOKEN_INDEX
/// -200, not a vocabulary entry), so prompts are tokenized around it in pieces.
extension CheckpointImporter {
    /// TinyLLaVA's conversation template per language-model family (tinyllava/data/template).
    static let tinyLLaVATemplates = ["llama": "llama", "phi": "phi", "gemma": "gemma", "qwen2": "qwen2_base", "stablelm": "phi"]
    /// Deepest "mlp{N}x_gelu" imported (TinyLLaVA ships 2 and 3): a bound, so a typo'd N cannot
    /// allocate N layer names.
    static let maxConnectorDepth = 16

    func runTinyLLaVA(config: [String: Any], configPath: String) throws -> ImportResult {
        let (vision, text) = try visionAndTextConfigs(config, configPath: configPath, model: "TinyLLaVA saves the config of")
        let (weightFiles, store) = try openWeights()

        // Preprocessing: the checkpoint's processor, else the vision family's; "pad" pads to a
        // square of the mean colour first (TinyLLaVA's expand2square).
        let aspect = try optional(config, "image_aspect_ratio", configPath, expected: "a string") ?? "square"
        guard aspect == "pad" || aspect == "square" else {
            throw ImportError.unsupported(file: configPath, field: "image_aspect_ratio", found: "\"\(aspect)\"", supported: "\"pad\", \"square\"")
        }
        var encoder = try visionManifest(id: "\(name)-vision", vision: vision, section: "vision_config", store: store,
                                         weightFiles: weightFiles, configPath: configPath, preprocess: try imagePreprocessingIfPresent())
        encoder.preprocess?.padToSquare = aspect == "pad"
        encoder.preprocess?.alpha = .drop  // TinyLLaVA opens images with PIL's convert("RGB")

        let (languageModel, warnings) = try languageModelManifest(id: "\(name)-llm", text: text, section: "text_config", store: store,
                                                      weightFiles: weightFiles, configPath: configPath,
                                                      tiedAtTop: try typedField(config, "tie_word_embeddings", file: configPath, field: "tie_word_embeddings",
                                                                                expected: "true or false"), transformersVersion: nil)
        let connector = try tinyLLaVAConnector(config: config, configPath: configPath, store: store, weightFiles: weightFiles,
                                               visionWidth: encoder.output!.width,
                                               textWidth: try int(text, "hidden_size", configPath, "text_config"))

        let strategy = try optional(config, "vision_feature_select_strategy", configPath, expected: "a string") ?? "patch"
        guard strategy == "patch" || strategy == "cls_patch" else {
            throw ImportError.unsupported(file: configPath, field: "vision_feature_select_strategy", found: "\"\(strategy)\"",
                                          supported: "\"patch\", \"cls_patch\"")
        }
        var assembly = Assembler.assembly(id: name, encoder: encoder.id, connector: connector.id, languageModel: languageModel.id,
                                          placeholder: "<image>",
                                          featureLayer: try optional(config, "vision_feature_layer", configPath, expected: "one layer index (an integer)") ?? -2,
                                          select: strategy == "patch" ? .patch : .full)
        assembly.chatTemplate = Self.tinyLLaVATemplates[languageModel.family]
        assembly.description = "TinyLLaVA checkpoint imported from \(relative(checkpoint))"
        if FileManager.default.fileExists(atPath: file("sample.png").path) {
            assembly.samples = ["<image>": relative(file("sample.png"))]
        }
        return try write(assembly: assembly, components: [encoder, connector, languageModel], warnings: warnings)
    }

    /// connector_type "mlp{N}x_gelu" (nn.Sequential: linears at 0, 2, 4, ...), "linear" (a bare
    /// nn.Linear) or "resampler" (TinyLLaVA's Perceiver resampler).
    private func tinyLLaVAConnector(config: [String: Any], configPath: String, store: WeightStore, weightFiles: [URL],
                                    visionWidth: Int, textWidth: Int) throws -> ComponentManifest {
        let type = try optional(config, "connector_type", configPath, expected: "a string") ?? "(none)"
        var family: String
        var object: [String: JSONValue]
        if type == "linear" {
            family = "linear"
            object = ["depth": .number(1), "layer_names": .array([.string("")])]
        } else if type.hasPrefix("mlp"), type.hasSuffix("x_gelu"), let depth = Int(type.dropFirst(3).dropLast(6)),
                  (1...Self.maxConnectorDepth).contains(depth) {
            family = "mlp"
            object = ["depth": .number(Double(depth)), "activation": .string("gelu"),
                      "layer_names": .array((0..<depth).map { .string(String($0 * 2)) })]
        } else if type == "resampler" {
            family = "resampler"
            object = ["num_queries": .number(Double(try int(config, "num_queries", configPath, ""))),
                      "layers": .number(Double(try int(config, "num_resampler_layers", configPath, "")))]
        } else {
            throw ImportError.unsupported(file: configPath, field: "connector_type", found: "\"\(type)\"",
                                          supported: "\"linear\", \"mlp{N}x_gelu\" (N from 1 to \(Self.maxConnectorDepth)), \"resampler\"")
        }
        guard store.tensorNames.contains(where: { $0.hasPrefix("connector._connector.") }) else {
            throw ImportError.missingTensors(directory: checkpoint.path, what: "connector (no connector._connector.* tensors)")
        }
        var connector = ComponentManifest(id: "\(name)-connector", kind: .connector, family: family, config: .object(object))
        connector.inputWidth = .fixed(visionWidth)
        connector.outputWidth = .fixed(textWidth)
        connector.weights = WeightsReference(files: weightFiles.map(relative), prefix: "connector._connector.")
        connector.description = "TinyLLaVA \(type) connector of \(checkpoint.lastPathComponent)"
        connector.source = relative(checkpoint)
        return connector
    }
}
