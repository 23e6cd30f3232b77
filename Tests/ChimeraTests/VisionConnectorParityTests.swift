import ChimeraComponents
import ChimeraIO
import ChimeraTensor
import Foundation
import Testing
@testable import Chimera

// SigLIP and the token-changing connectors against transformers / the published PyTorch
// definitions, on fixtures made by Scripts/make_vision_connector_fixtures.py.

private let fixtures = packageRoot.appendingPathComponent("Tests/ChimeraTests/Fixtures")

private func catalog(_ folders: [URL]) throws -> Catalog {
    var catalog = Catalog()
    for folder in folders { try catalog.load(directory: folder) }
    return catalog
}

/// A config object from a literal.
private func config(_ object: [String: Any]) throws -> JSONValue {
    try JSONDecoder().decode(JSONValue.self, from: JSONSerialization.data(withJSONObject: object))
}

private func message(_ body: () throws -> Any) -> String {
    do { _ = try body(); return "(no error)" } catch { return (error as? LocalizedError)?.errorDescription ?? "\(error)" }
}

@Suite struct VisionConnectorParityTests {
    static let connectors = ["resampler", "ldpv2", "pixel-shuffle"]
    let families = BuiltinFamilies.registry()

    // MARK: - SigLIP

    @Test func siglipHiddenStatesOfEveryLayerMatch() throws {
        let directory = fixtures.appendingPathComponent("vc-siglip")
        let manifest = try catalog([directory]).component("vc-siglip")
        let encoder = try #require(try families.build(manifest) as? SigLIPVisionEncoder)
        let reference = try WeightStore(files: [directory.appendingPathComponent("reference.safetensors").path])
        let pixels = try reference.tensor("pixel_values")
        let expected = try reference.tensor("hidden_states")
        #expect(encoder.hiddenStateCount == expected.shape[0])
        #expect(encoder.output == TokenContract(width: 32, tokens: 16, grid: [4, 4], classToken: false))
        for layer in 0..<encoder.hiddenStateCount {
            let ours = try encoder.hiddenState(pixels, layer: layer)
            #expect(ours.shape == [16, 32])
            #expect(maxAbsDifference(ours, slice(expected, layer)) < 1e-4, "layer \(layer)")
        }
        // No class token or pre-norm in the weights: every tensor read is an embedding, a layer, or the bias.
        #expect(encoder.parameters.contains { $0.name == "embeddings.patch_embedding.bias" })
        #expect(!encoder.parameters.contains { $0.name.contains("post_layernorm") || $0.name.contains("class_embedding") })
        #expect(throws: EncoderError.self) { try encoder.hiddenState(Tensor(zeros: [3, 32, 32]), layer: 1) }
    }

    @Test func siglipManifestMustAgreeWithItsConfig() throws {
        let directory = fixtures.appendingPathComponent("vc-siglip")
        var manifest = try catalog([directory]).component("vc-siglip")
        #expect(throws: Never.self) { try families.family(for: manifest).validate(manifest) }
        manifest.output = TokenContract(width: 32, tokens: 17, grid: [4, 4])  // a CLIP-style count
        let tokens = message { try families.family(for: manifest).validate(manifest) }
        #expect(tokens.contains("tokens 17") && tokens.contains("tokens 16"))
        manifest.output = TokenContract(width: 32, tokens: 16, grid: [4, 4], classToken: true)
        #expect(message { try families.family(for: manifest).validate(manifest) }.contains("class_token"))
    }

    /// "patch" drops the first row even without a class token (TinyLLaVA's SigLIP checkpoints: 728 of 729).
    @Test func featureSelectionOnSigLIP() throws {
        let directory = fixtures.appendingPathComponent("vc-siglip")
        let manifest = try catalog([directory]).component("vc-siglip")
        #expect(CompatibilityChecker.selectedTokens(manifest, select: .patch) == 15)
        #expect(CompatibilityChecker.selectedTokens(manifest, select: .full) == 16)
        var so400m = manifest
        so400m.config = try config(["hidden_size": 1152, "layers": 27, "heads": 16, "intermediate_size": 4304,
                                 "image_size": 384, "patch_size": 14])
        so400m.preprocess?.size = 384  // preprocess must give image_size pixels
        so400m.output = TokenContract(width: 1152, tokens: 729, grid: [27, 27], classToken: false)
        #expect(throws: Never.self) { try families.family(for: so400m).validate(so400m) }
        #expect(CompatibilityChecker.selectedTokens(so400m, select: .patch) == 728)
        // Real shapes (weights that read as zeros): 384 px in patches of 14 → 27 × 27, the last 6 pixels dropped.
        let encoder = try #require(try families.build(so400m, substitute: .shapesOnly) as? SigLIPVisionEncoder)
        let embeddings = try encoder.hiddenState(Tensor(zeros: [3, 384, 384]), layer: 0)
        #expect(embeddings.shape == [729, 1152] && encoder.hiddenStateCount == 28)
        #expect(encoder.parameters.contains { $0.name == "embeddings.position_embedding.weight" && $0.tensor.shape == [729, 1152] })
    }

    /// Through an assembly, "patch" hands the connector rows 1..<16 of the SigLIP hidden state.
    @Test func patchSelectionDropsTheFirstSigLIPPatch() throws {
        let (catalog, imported) = try siglipCatalog()
        var assembly = imported
        assembly.inputs[0].connector = "vc-resampler"
        assembly.inputs[0].select = .patch
        let model = try Assembler(catalog: catalog, families: families).build(assembly)
        let input = model.inputs[0]
        let fixture = try LLaVAFixture("vc-llava-siglip")
        let hidden = slice(try fixture.reference.tensor("vision_hidden_states"), input.encoder.hiddenStateCount - 2)
        let expected = try input.connector.forward(hidden.rows(1..<16))
        #expect(maxAbsDifference(try model.encode(fixture.image, with: input), expected) < 1e-4)
        #expect(maxAbsDifference(expected, try input.connector.forward(hidden)) > 1e-3, "the dropped patch matters")
    }

    // MARK: - Connectors

    @Test(arguments: connectors) func connectorMatchesItsPublishedDefinition(name: String) throws {
        let directory = fixtures.appendingPathComponent("vc-connectors")
        let manifest = try catalog([directory]).component("vc-\(name)")
        let connector = try #require(try families.build(manifest) as? any Connector)
        let io = try WeightStore(files: [directory.appendingPathComponent("\(name).io.safetensors").path])
        let input = try io.tensor("input"), expected = try io.tensor("output")
        let output = try connector.forward(input)
        #expect(output.shape == expected.shape)
        #expect(maxAbsDifference(output, expected) < 1e-4)
        // The declared token count is what comes out, from the built connector and from the manifest alone.
        #expect(connector.outputTokens(forInputTokens: input.rows) == expected.rows)
        #expect(try families.family(for: manifest).connectorTokens(manifest, input.rows) == expected.rows)
        // Every stored tensor is read, under its published name.
        let stored = try WeightStore(files: [directory.appendingPathComponent("\(name).safetensors").path])
        let ours = Set(connector.parameters.map(\.name))
        let theirs = Set(stored.tensorNames)
        #expect(ours == theirs)
    }

    @Test func declaredTokenCounts() throws {
        let directory = fixtures.appendingPathComponent("vc-connectors")
        let c = try catalog([directory])
        func tokens(_ id: String, _ n: Int) throws -> Int? {
            let m = try c.component(id)
            return try families.family(for: m).connectorTokens(m, n)
        }
        #expect(try tokens("vc-resampler", 728) == 6)
        #expect(try tokens("vc-resampler", 0) == nil)
        #expect(try tokens("vc-ldpv2", 576) == 9 && tokens("vc-ldpv2", 575) == nil)
        #expect(try tokens("vc-pixel-shuffle", 576) == 144 && tokens("vc-pixel-shuffle", 729) == nil)
        #expect(try tokens("vc-pixel-shuffle", 728) == nil)
        var mobileVLM = try c.component("vc-ldpv2")
        mobileVLM.config = .object([:])  // MobileVLM's 12 × 12
        #expect(try families.family(for: mobileVLM).connectorTokens(mobileVLM, 576) == 144)
    }

    @Test func connectorsRefuseWhatTheyCannotTake() throws {
        let directory = fixtures.appendingPathComponent("vc-connectors")
        let c = try catalog([directory])
        let ldp = try #require(try families.build(try c.component("vc-ldpv2")) as? any Connector)
        let notSquare = message { try ldp.forward(Tensor(zeros: [48, 32])) }
        #expect(notSquare.contains("vc-ldpv2") && notSquare.contains("48 tokens") && notSquare.contains("square"))
        #expect(message { try ldp.forward(Tensor(zeros: [49, 24])) }.contains("width 24, expected 32"))

        let shuffle = try #require(try families.build(try c.component("vc-pixel-shuffle")) as? any Connector)
        let odd = message { try shuffle.forward(Tensor(zeros: [25, 32])) }
        #expect(odd.contains("25 tokens") && odd.contains("grid side 5 is not a multiple of factor 2"))
        #expect(message { try shuffle.forward(Tensor(zeros: [35, 32])) }.contains("square"))

        let resampler = try #require(try families.build(try c.component("vc-resampler")) as? any Connector)
        #expect(message { try resampler.forward(Tensor(zeros: [5, 31])) }.contains("width 31, expected 32"))

        // Identity: widths must match, when declared and when settled by an assembly.
        let folder = temporaryDirectory()
        let identity = folder.appendingPathComponent("identity.component.json")
        try Data(#"{"schema": "chimera.component/v1", "id": "same", "kind": "connector", "family": "identity", "config": {}, "input_width": 32, "output_width": 32}"#.utf8).write(to: identity)
        var manifest = try catalog([folder]).component("same")
        let passthrough = try #require(try families.build(manifest) as? any Connector)
        let x = Tensor(shape: [2, 32], values: (0..<64).map(Float.init))
        #expect(try passthrough.forward(x).toArray() == x.toArray())
        #expect(passthrough.outputTokens(forInputTokens: 729) == 729)
        #expect(message { try passthrough.forward(Tensor(zeros: [2, 48])) }.contains("width 48, expected 32"))
        manifest.outputWidth = .fixed(48)
        #expect(message { try families.family(for: manifest).validate(manifest) }.contains("input_width 32 and output_width 48 must be equal"))
        manifest.inputWidth = .auto; manifest.outputWidth = .auto
        #expect(message { try families.build(manifest, inputWidth: 32, outputWidth: 48) }.contains("cannot map width 32 to width 48"))
        manifest.config = try config(["width": 32])
        #expect(message { try families.family(for: manifest).validate(manifest) }.contains("unknown field 'width'"))

        // The weighted families do not start fresh.
        var fresh = try c.component("vc-ldpv2")
        fresh.weights = nil
        #expect(message { try families.build(fresh) }.contains("weights: required"))
    }

    // MARK: - LLaVA with a SigLIP tower, end to end

    @Test func llavaSiglipImportsAndGeneratesAsTransformers() throws {
        let fixture = try LLaVAFixture("vc-llava-siglip")
        let model = try fixture.importAndBuild()
        let input = model.inputs[0]
        #expect(input.encoder.manifest.family == "siglip-vision")
        #expect(input.encoder.output.tokens == 16 && input.binding.select == .full)
        let pixels = try input.encoder.prepareInput(contentsOf: fixture.image)
        #expect(maxAbsDifference(pixels, try fixture.reference.tensor("pixel_values")) < 1e-5)
        let hidden = try fixture.reference.tensor("vision_hidden_states")
        for layer in 0..<input.encoder.hiddenStateCount {
            #expect(maxAbsDifference(try input.encoder.hiddenState(pixels, layer: layer), slice(hidden, layer)) < 1e-4, "layer \(layer)")
        }
        let features = try model.encode(fixture.image, with: input)
        #expect(maxAbsDifference(features, try fixture.reference.tensor("projected")) < 1e-4)

        let prepared = try model.prepare(prompt: fixture.prompt, inputs: [input.binding.placeholder: [fixture.image]])
        #expect(prepared.tokens == fixture.inputIDs)
        let cache = model.languageModel.makeCache(capacity: prepared.embeddings.rows)
        let logits = try model.languageModel.forward(embeddings: prepared.embeddings, cache: cache, lastOnly: false)
        #expect(maxAbsDifference(logits, try fixture.reference.tensor("logits")) < 1e-4)

        let result = try model.generate(prompt: fixture.prompt, inputs: [input.binding.placeholder: [fixture.image]],
                                        options: GenerationOptions(maxTokens: fixture.maxNewTokens, temperature: 0))
        let ours = result.stopReason == "eos" ? result.tokens + [model.eosTokenIDs.min()!] : result.tokens
        #expect(ours == fixture.generated)
    }

    // MARK: - Token counts in compat and the assembler

    /// The imported LLaVA-SigLIP parts with the fixture connectors between them (widths 32 → 48).
    func siglipCatalog() throws -> (Catalog, AssemblyManifest) {
        let out = temporaryDirectory()
        let result = try CheckpointImporter(checkpoint: fixtures.appendingPathComponent("vc-llava-siglip"), outputDirectory: out).run()
        return (try catalog([out, fixtures.appendingPathComponent("vc-connectors")]), try #require(result.assembly))
    }

    @Test(arguments: [("vc-pixel-shuffle", 4), ("vc-ldpv2", 9), ("vc-resampler", 6)])
    func assembledConnectorsSpliceTheirTokenCount(connector: String, tokens: Int) throws {
        let (catalog, imported) = try siglipCatalog()
        var assembly = imported
        assembly.id = "siglip-\(connector)"
        assembly.inputs[0].connector = connector
        #expect(CompatibilityChecker(catalog: catalog, families: families).problems(assembly: assembly) == [])
        let model = try Assembler(catalog: catalog, families: families).build(assembly)
        let fixture = try LLaVAFixture("vc-llava-siglip")
        let placeholder = model.inputs[0].binding.placeholder
        let prepared = try model.prepare(prompt: fixture.prompt, inputs: [placeholder: [fixture.image]])
        let imageID = try #require(model.tokenizer.tokenID(placeholder))
        #expect(prepared.tokens.filter { $0 == imageID }.count == tokens)
        #expect(prepared.embeddings.rows == fixture.inputIDs.count - 16 + tokens)
        let result = try model.generate(prompt: fixture.prompt, inputs: [placeholder: [fixture.image]],
                                        options: GenerationOptions(maxTokens: 3, temperature: 0))
        #expect(result.tokens.count + (result.stopReason == "eos" ? 1 : 0) == 3)
    }

    @Test func patchSelectionOnSigLIPIsRefusedByGridConnectors() throws {
        let (catalog, imported) = try siglipCatalog()
        var assembly = imported
        assembly.inputs[0].connector = "vc-pixel-shuffle"
        assembly.inputs[0].select = .patch  // 15 tokens: no grid
        let problems = CompatibilityChecker(catalog: catalog, families: families).problems(assembly: assembly)
        #expect(problems == ["inputs[0]: connector 'vc-pixel-shuffle' cannot take 15 tokens"])
        #expect(message { try Assembler(catalog: catalog, families: families).build(assembly) }.contains("cannot take 15 tokens"))
    }

    /// A 577-token CLIP (336 px, patch 14) overflows a 200-token context through an MLP; LDPv2's
    /// 12 × 12 pooling brings it to 144 and it fits.
    @Test func ldpv2MakesALargeCLIPFitASmallContext() throws {
        let (base, imported) = try siglipCatalog()
        let folder = temporaryDirectory()
        var clip = try base.component(imported.inputs[0].encoder)
        clip.id = "clip-336"; clip.family = "clip-vision"
        clip.config = try config(["hidden_size": 32, "layers": 1, "heads": 4, "intermediate_size": 64, "image_size": 336, "patch_size": 14])
        clip.preprocess?.size = 336  // preprocess must give image_size pixels
        clip.output = TokenContract(width: 32, tokens: 577, grid: [24, 24])
        var lm = try base.component(imported.languageModel)
        lm.id = "short-llm"; lm.contextLength = 200
        var ldp = try base.component("vc-ldpv2")
        ldp.id = "ldp-12"; ldp.config = try config(["grid": [12, 12]])
        var mlp = try base.component(imported.inputs[0].connector)
        mlp.id = "mlp-576"
        let checker = CompatibilityChecker(catalog: base, families: families)
        #expect(checker.problems(encoder: clip, connector: mlp, languageModel: lm) ==
                [.tokensOverContext(tokens: 576, languageModel: "short-llm", context: 200)])
        #expect(checker.problems(encoder: clip, connector: ldp, languageModel: lm) == [])
        #expect(checker.connectorTokens(ldp, input: CompatibilityChecker.selectedTokens(clip, select: .patch)) == 144)
        // Keeping the class token leaves 577 rows: no square grid for the pooling.
        #expect(checker.problems(encoder: clip, connector: ldp, languageModel: lm, select: .full) ==
                [.tokenCountRejected(connector: "ldp-12", tokens: 577)])
        _ = folder
    }
}
