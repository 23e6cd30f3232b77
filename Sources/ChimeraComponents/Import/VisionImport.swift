import Chimera
import ChimeraIO
import ChimeraTensor
import Foundation

/// Maps a Hugging Face vision config (CLIP or SigLIP, standalone or nested in a LLaVA / TinyLLaVA
/// config) to an encoder manifest.
public enum VisionImport {
    struct Family {
        let family: String
        let classToken: Bool
        let name: String
        /// The processor transformers pairs with it, for checkpoints that ship none.
        func defaultPreprocessing(imageSize: Int) -> ImagePreprocessing {
            classToken
                ? ImagePreprocessing(resize: .shortestEdge, size: imageSize, cropSize: imageSize,
                                     mean: [0.48145466, 0.4578275, 0.40821073], std: [0.26862954, 0.26130258, 0.27577711])
                : ImagePreprocessing(resize: .exact, size: imageSize, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5])
        }
    }

    /// vision_config.model_type → family, looked up exactly.
    static let families: [String: Family] = [
        "clip_vision_model": Family(family: "clip-vision", classToken: true, name: "CLIP"),
        "siglip_vision_model": Family(family: "siglip-vision", classToken: false, name: "SigLIP"),
    ]
    /// Standalone checkpoints: the vision model itself, or a dual encoder whose vision half is used.
    static let standaloneTypes: Set = ["clip_vision_model", "siglip_vision_model", "clip", "siglip"]

    static func family(_ vision: [String: Any], section: String, file: String) throws -> Family {
        let type = ConfigDefaults.modelType(vision, or: ConfigDefaults.visionModelType)
        guard let family = families[type] else {
            throw ImportError.unsupported(file: file, field: section.isEmpty ? "model_type" : "\(section).model_type", found: "\"\(type)\"",
                                          supported: families.keys.sorted().map { "\"\($0)\"" }.joined(separator: ", "))
        }
        return family
    }
}

extension CheckpointImporter {
    /// An encoder manifest for a vision config whose tensors sit under the prefix found in `store`.
    func visionManifest(id: String, vision: [String: Any], section: String, store: WeightStore, weightFiles: [URL],
                        configPath: String, preprocess: ImagePreprocessing?) throws -> ComponentManifest {
        let family = try VisionImport.family(vision, section: section, file: configPath)
        let vision = ConfigDefaults.filled(vision, modelType: ConfigDefaults.modelType(vision, or: ConfigDefaults.visionModelType))
        guard let visionPrefix = prefix(in: store, endingWith: "embeddings.patch_embedding.weight") else {
            throw ImportError.missingTensors(directory: checkpoint.path, what: "vision tower (no *embeddings.patch_embedding.weight)")
        }
        let hidden = try int(vision, "hidden_size", configPath, section)
        // Bounded as the encoder config is, so the grid below cannot divide by zero or overflow.
        let imageSize = try int(vision, "image_size", configPath, section, in: 1...ImagePreprocessing.maxSide)
        let patchSize = try int(vision, "patch_size", configPath, section, in: 1...imageSize)
        let side = imageSize / patchSize
        // Filled in from the model type's defaults when absent; null is refused.
        func required<T>(_ key: String, _ expected: String) throws -> T {
            try requiredField(vision, key, file: configPath, field: "\(section).\(key)", expected: expected)
        }
        var encoder = ComponentManifest(id: id, kind: .encoder, family: family.family, config: .object([
            "hidden_size": .number(Double(hidden)),
            "layers": .number(Double(try int(vision, "num_hidden_layers", configPath, section))),
            "heads": .number(Double(try int(vision, "num_attention_heads", configPath, section))),
            "intermediate_size": .number(Double(try int(vision, "intermediate_size", configPath, section))),
            "image_size": .number(Double(imageSize)), "patch_size": .number(Double(patchSize)),
            "layer_norm_eps": .number(try positiveEpsilon(required("layer_norm_eps", "a number"), vision, "layer_norm_eps",
                                                          file: configPath, field: "\(section).layer_norm_eps")),
            "hidden_act": .string(try required("hidden_act", "a string")),
        ]))
        encoder.modality = "image"
        encoder.output = TokenContract(width: hidden, tokens: side * side + (family.classToken ? 1 : 0), grid: [side, side],
                                       classToken: family.classToken ? nil : false)  // CLIP manifests keep the implicit default
        encoder.preprocess = preprocess ?? family.defaultPreprocessing(imageSize: imageSize)
        encoder.weights = WeightsReference(files: weightFiles.map(relative), prefix: visionPrefix)
        encoder.description = "\(family.name) vision tower of \(checkpoint.lastPathComponent)"
        encoder.source = relative(checkpoint)
        return encoder
    }

    /// The preprocessor config when the checkpoint has one.
    func imagePreprocessingIfPresent() throws -> ImagePreprocessing? {
        let names = ["preprocessor_config.json", "processor_config.json"]
        return names.contains { FileManager.default.fileExists(atPath: file($0).path) } ? try imagePreprocessing() : nil
    }

    /// A CLIPVisionModel / SiglipVisionModel folder, or the vision half of a CLIPModel / SiglipModel:
    /// one encoder component, no assembly.
    func runVisionModel(config: [String: Any], configPath: String) throws -> ImportResult {
        let modelType = config["model_type"] as? String ?? ""
        var vision = config
        var section = ""
        if modelType == "clip" || modelType == "siglip" {
            guard let nested = config["vision_config"] as? [String: Any] else {
                throw ImportError.missing(file: configPath, field: "vision_config", why: "a \(modelType) dual encoder describes its vision half there")
            }
            vision = nested
            vision["model_type"] = vision["model_type"] ?? "\(modelType)_vision_model"
            section = "vision_config"
        }
        let (weightFiles, store) = try openWeights()
        let encoder = try visionManifest(id: name, vision: vision, section: section, store: store, weightFiles: weightFiles,
                                         configPath: configPath, preprocess: try imagePreprocessingIfPresent())
        return try write(assembly: nil, components: [encoder])
    }
}
