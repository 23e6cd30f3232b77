import ChimeraComponents
import ChimeraIO
import ChimeraTensor
import Foundation
import Testing
@testable import Chimera

/// A TinyLLaVA_Factory-layout checkpoint (SigLIP + mlp2x_gelu + Phi, "patch" selection, "pad"
/// aspect ratio) made by Scripts/make_tinyllava_fixture.py, which re-states TinyLLaVA's forward.
@Suite struct TinyLLaVAImportTests {
    @Test func importsAsSigLIPMLPAndPhiWithPaddingAndPatchSelection() throws {
        let fixture = try LLaVAFixture("tinyllava-phi-siglip")
        let model = try fixture.importAndBuild()
        #expect(model.manifest.chatTemplate == "phi")
        let input = try #require(model.inputs.first)
        #expect(input.binding.select == .patch && input.binding.featureLayer == -2 && input.binding.placeholder == "<image>")
        #expect(input.encoder.manifest.family == "siglip-vision" && input.encoder.manifest.preprocess?.padToSquare == true)
        #expect(input.encoder.manifest.preprocess?.alpha == .drop)  // TinyLLaVA's loader: PIL convert("RGB")
        #expect(input.connector.manifest.family == "mlp" && model.languageModel.manifest.family == "phi")
        // The connector's nn.Sequential linears sit at indices 0 and 2.
        #expect(input.connector.parameters.map(\.name).sorted() == [
            "connector._connector.0.bias", "connector._connector.0.weight", "connector._connector.2.bias", "connector._connector.2.weight"])
    }

    @Test func pixelsFeaturesLogitsAndGreedyIdsMatchTinyLLaVA() throws {
        let fixture = try LLaVAFixture("tinyllava-phi-siglip")
        let (catalog, assembly) = try fixture.imported()
        let model = try Assembler(catalog: catalog, families: BuiltinFamilies.registry()).build(assembly)
        let input = model.inputs[0]
        // expand2square with the mean colour, then SiglipImageProcessor.
        let pixels = try input.encoder.prepareInput(contentsOf: fixture.image)
        #expect(maxAbsDifference(pixels, try fixture.reference.tensor("pixel_values")) < 1e-5)
        let features = try model.encode(fixture.image, with: input)
        #expect(maxAbsDifference(features, try fixture.reference.tensor("projected")) < 1e-4)
        // The textual <image> (-200 in TinyLLaVA) is not a vocabulary entry: text is tokenized around it.
        let prepared = try model.prepare(prompt: fixture.prompt, inputs: ["<image>": [fixture.image]])
        let expectedTokens = fixture.inputIDs.flatMap { $0 == -200 ? Array(repeating: -1, count: features.rows) : [$0] }
        #expect(prepared.tokens == expectedTokens)
        let layout = try PromptLayout(fixture.prompt, assembly: assembly, catalog: catalog, families: BuiltinFamilies.registry(),
                                      tokenizer: model.tokenizer, inputs: ["<image>": [fixture.image]])
        #expect(layout.tokens == expectedTokens)
        let cache = model.languageModel.makeCache(capacity: prepared.embeddings.rows)
        let logits = try model.languageModel.forward(embeddings: prepared.embeddings, cache: cache, lastOnly: false)
        #expect(maxAbsDifference(logits, try fixture.reference.tensor("logits")) < 1e-4)
        let result = try model.generate(prompt: fixture.prompt, inputs: ["<image>": [fixture.image]],
                                        options: GenerationOptions(maxTokens: fixture.maxNewTokens))
        #expect(result.tokens == fixture.generated)
    }

    /// The import's error for the fixture with one config field set to `value`.
    func importError(setting key: String, to value: Any) throws -> String {
        let dir = temporaryDirectory().appendingPathComponent("tl")
        try FileManager.default.copyItem(at: packageRoot.appendingPathComponent("Tests/ChimeraTests/Fixtures/tinyllava-phi-siglip"), to: dir)
        let url = dir.appendingPathComponent("config.json")
        var config = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        config[key] = value
        try JSONSerialization.data(withJSONObject: config).write(to: url)
        do {
            _ = try CheckpointImporter(checkpoint: dir, outputDirectory: temporaryDirectory()).run()
            return "(imported)"
        } catch {
            return (error as? LocalizedError)?.errorDescription ?? "\(error)"
        }
    }

    @Test func unsupportedConnectorTypesAreNamed() throws {
        let message = try importError(setting: "connector_type", to: "qformer")
        #expect(message.contains("connector_type") && message.contains("qformer") && message.contains("mlp{N}x_gelu"), "\(message)")
    }

    /// A config that does not describe its weights (here a connector one layer deep over mlp2x
    /// weights) is refused by import, which builds each part over the mapped weights.
    @Test func configThatDoesNotDescribeItsWeightsIsRefused() throws {
        let message = try importError(setting: "connector_type", to: "mlp3x_gelu")
        #expect(message.contains("the manifest of 'tl-connector' made from it would be refused (nothing was written): its weights do not fit it: missing tensor"),
                "\(message)")
    }

    /// A value of the wrong type is named, not taken as absent (and so as the default).
    @Test(arguments: [("vision_feature_layer", "[-2, -1]", "vision_feature_layer must be one layer index (an integer), found [-2,-1]"),
                      ("vision_feature_layer", #""-1""#, #"vision_feature_layer must be one layer index (an integer), found "-1""#),
                      ("image_aspect_ratio", "1", "image_aspect_ratio must be a string, found 1"),
                      ("vision_feature_select_strategy", "5", "vision_feature_select_strategy must be a string, found 5"),
                      ("connector_type", "2", "connector_type must be a string, found 2")])
    func wronglyTypedSettingsAreNamed(key: String, json: String, expected: String) throws {
        let value = try JSONSerialization.jsonObject(with: Data(json.utf8), options: .fragmentsAllowed)
        let message = try importError(setting: key, to: value)
        #expect(message.contains("config.json: " + expected), "\(message)")
    }
}

/// Standalone vision checkpoints become single encoder manifests.
@Suite struct StandaloneVisionImportTests {
    /// Writes the vision half of a fixture as a CLIPVisionModel / SiglipVisionModel folder.
    func standalone(from fixture: String, modelType: String, prefix: String, dual: Bool) throws -> URL {
        let source = packageRoot.appendingPathComponent("Tests/ChimeraTests/Fixtures/\(fixture)")
        let dir = temporaryDirectory().appendingPathComponent("vision")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let config = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: source.appendingPathComponent("config.json"))) as? [String: Any])
        var vision = try #require(config["vision_config"] as? [String: Any])
        let out: [String: Any] = dual ? ["model_type": modelType, "vision_config": vision] : { vision["model_type"] = modelType; return vision }()
        try JSONSerialization.data(withJSONObject: out).write(to: dir.appendingPathComponent("config.json"))
        try FileManager.default.copyItem(at: source.appendingPathComponent("model.safetensors"), to: dir.appendingPathComponent("model.safetensors"))
        return dir
    }

    @Test(arguments: [("clip_vision_model", false), ("clip", true)]) func clipVisionModel(modelType: String, dual: Bool) throws {
        let dir = try standalone(from: "llava-a", modelType: modelType, prefix: "model.vision_tower.", dual: dual)
        let result = try CheckpointImporter(checkpoint: dir, outputDirectory: temporaryDirectory(), name: "my-clip").run()
        #expect(result.assembly == nil)
        var catalog = Catalog()
        try catalog.load(directory: result.mainPath.deletingLastPathComponent())
        let manifest = try catalog.component("my-clip", kind: .encoder)
        #expect(manifest.family == "clip-vision" && manifest.output?.tokens == 17)
        // No processor config in the folder: CLIP's own (shortest edge + crop, CLIP mean/std).
        #expect(manifest.preprocess?.cropSize == 32)
        let encoder = try #require(try BuiltinFamilies.registry().build(manifest) as? any ModalityEncoder)
        let fixture = try LLaVAFixture("llava-a")
        let hidden = try encoder.hiddenState(try fixture.reference.tensor("pixel_values"), layer: -2)
        let expected = try fixture.reference.tensor("vision_hidden_states")
        #expect(maxAbsDifference(hidden, slice(expected, expected.shape[0] - 2)) < 1e-4)
    }

    @Test func siglipVisionModel() throws {
        let dir = try standalone(from: "tinyllava-phi-siglip", modelType: "siglip", prefix: "", dual: true)
        let result = try CheckpointImporter(checkpoint: dir, outputDirectory: temporaryDirectory(), name: "my-siglip").run()
        var catalog = Catalog()
        try catalog.load(directory: result.mainPath.deletingLastPathComponent())
        let manifest = try catalog.component("my-siglip", kind: .encoder)
        #expect(manifest.family == "siglip-vision" && manifest.output?.tokens == 16 && manifest.preprocess?.resize == .exact)
        #expect(try BuiltinFamilies.registry().build(manifest) is any ModalityEncoder)
    }
}
