import ChimeraComponents
import ChimeraIO
import Foundation
import Testing
@testable import Chimera

private typealias F = ManifestFixtures

/// Image encoder configs, preprocessing and images that once overflowed, divided by zero or asked
/// for gigabytes: each is refused with a message naming the file, the field, what was expected and what was found.
@Suite struct BadImageEncoderInputTests {
    /// The shipped tiny CLIP encoder (image_size 64, patch 16, shortest edge 64 + crop 64), changed.
    func encoder(_ change: (inout [String: Any]) throws -> Void) throws -> ComponentManifest {
        var m = try F.relocatable(F.encoderID)
        try change(&m)
        return try F.component(m, in: try F.temporaryFolder())
    }

    func preprocess(_ m: inout [String: Any], _ values: [String: Any?]) throws {
        var preprocess = try #require(m["preprocess"] as? [String: Any])
        for (key, value) in values { preprocess[key] = value }
        m["preprocess"] = preprocess
    }

    /// What `chimera validate` reports and what building the encoder throws.
    func refusals(_ manifest: ComponentManifest) -> (validate: [String], build: String) {
        let problems = CompatibilityChecker(catalog: Catalog(), families: BuiltinFamilies.registry()).problems(of: manifest)
        return (problems.map(\.description), message { _ = try BuiltinFamilies.registry().build(manifest) })
    }

    /// The declared output must be what the config gives: width and tokens, and the grid too
    /// (nothing read it: [-4, -4] passed).
    @Test func declaredOutputAgreesWithTheConfig() throws {
        for (grid, width) in [([-4, -4], 64), ([4, 4], 47)] {
            let manifest = try encoder { m in
                var output = try #require(m["output"] as? [String: Any])
                output["grid"] = grid
                output["width"] = width
                m["output"] = output
            }
            let (validate, _) = refusals(manifest)
            let expected = width == 64 ? "output.grid: [-4, -4] disagrees with config, which gives [4, 4]"
                : "output: {width 47, tokens 17} disagrees with config, which gives {width 64, tokens 17}"
            #expect(validate.contains { $0.contains(manifest.origin) && $0.contains(expected) }, "\(validate)")
        }
    }

    @Test func imageSizeAboveTheBoundIsRefusedNotOverflowed() throws {
        let manifest = try F.component(try F.relocatable(F.encoderID) { $0["image_size"] = 4_294_967_296; $0["patch_size"] = 1 },
                                       in: try F.temporaryFolder())
        let (validate, build) = refusals(manifest)
        for text in validate + [build] {
            #expect(text.contains(manifest.origin) && text.contains("config.image_size") && text.contains("8192")
                    && text.contains("4294967296"), "\(text)")
        }
        #expect(validate.count == 1)
    }

    @Test(arguments: [("size", 4_611_686_018_427_387_904), ("crop_size", 3_000_000_000), ("size", 0)])
    func preprocessSizesAreBoundedWhenDecoded(field: String, value: Int) throws {
        let text = try F.refusal(of: F.encoderID) { try preprocess(&$0, [field: value]) }
        #expect(text.contains("preprocess") && text.contains("\(field) must be between 1 and 8192, got \(value)"), "\(text)")
    }

    @Test func exactResizeToAnotherSizeThanImageSizeIsRefused() throws {
        let manifest = try encoder { try preprocess(&$0, ["resize": "exact", "size": 3000, "crop_size": nil]) }
        let (validate, build) = refusals(manifest)
        for text in validate + [build] {
            #expect(text.contains(manifest.origin) && text.contains("preprocess: must give 64 x 64 pixels (config.image_size), gives 3000 x 3000"),
                    "\(text)")
        }
        #expect(validate.count == 1)
    }

    @Test func shortestEdgeWithoutCropIsRefused() throws {
        let manifest = try encoder { try preprocess(&$0, ["crop_size": nil]) }
        let (validate, build) = refusals(manifest)
        for text in validate + [build] {
            #expect(text.contains("preprocess: must give 64 x 64 pixels") && text.contains("any aspect ratio"), "\(text)")
        }
    }

    /// A 1 x 65535 PNG (it decodes: both sides are within the decoder's limits).
    static let tallPNG = Data(base64Encoded: "iVBORw0KGgoAAAANSUhEUgAAAAEAAP//CAIAAAAt2WGHAAABF0lEQVR4nO3DQQ0AAAwDoUo/6ftMBiSsmqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqrqP0xWFQHnLO5eAAAAAElFTkSuQmCC")!

    /// Shortest edge 336 then a 64 crop: the whole resized strip (336 x 22 million) would be built
    /// before the crop. Refused before any resizing, naming the image and its size.
    @Test func anImageWhoseResizeIsAbsurdIsRefused() throws {
        let manifest = try encoder { try preprocess(&$0, ["size": 336]) }
        let encoder = try #require(try BuiltinFamilies.registry().build(manifest) as? any ModalityEncoder)
        let image = try F.temporaryFolder().appendingPathComponent("tall.png")
        try Self.tallPNG.write(to: image)
        let text = message { _ = try encoder.prepareInput(contentsOf: image) }
        #expect(text.contains(image.path) && text.contains("1x65535") && text.contains("shortest_edge 336")
                && text.contains("336x22019760") && text.contains("268435456 pixels"), "\(text)")
        // Padding it to a square first would need 65535 x 65535.
        let padded = try self.encoder { try preprocess(&$0, ["pad_to_square": true]) }
        let paddedEncoder = try #require(try BuiltinFamilies.registry().build(padded) as? any ModalityEncoder)
        let paddedText = message { _ = try paddedEncoder.prepareInput(contentsOf: image) }
        #expect(paddedText.contains(image.path) && paddedText.contains("padding to a square gives 65535x65535"), "\(paddedText)")
    }

    @Test(arguments: [#"{"shortest_edge": 1000000}"#, #"{"height": 99999999, "width": 99999999}"#])
    func huggingFaceSizesAreBounded(size: String) {
        let text = message {
            _ = try ImagePreprocessing(huggingFaceConfigData: Data(#"{"image_processor_type": "CLIPImageProcessor", "size": \#(size)}"#.utf8),
                                       name: "x/preprocessor_config.json")
        }
        #expect(text.contains("x/preprocessor_config.json") && text.contains("size must be between 1 and 8192, got"), "\(text)")
    }

    @Test func huggingFaceCropSizeIsBounded() {
        let json = #"{"image_processor_type": "CLIPImageProcessor", "crop_size": {"height": 500000000, "width": 500000000}}"#
        let text = message { _ = try ImagePreprocessing(huggingFaceConfigData: Data(json.utf8), name: "x/preprocessor_config.json") }
        #expect(text.contains("x/preprocessor_config.json") && text.contains("crop_size must be between 1 and 8192, got 500000000"), "\(text)")
    }
}

/// `chimera import` of checkpoints whose configs would have crashed the importer.
extension ImportErrorTests {
    func vision(_ config: inout [String: Any], _ values: [String: Any]) throws {
        var vision = try #require(config["vision_config"] as? [String: Any])
        vision.merge(values) { $1 }
        config["vision_config"] = vision
    }

    @Test(arguments: ["5", #""x""#, "[1, 2]"])
    func processorConfigWhoseImageProcessorIsNotAnObject(value: String) throws {
        let dir = try copyFixture("llava-a")
        let processor = dir.appendingPathComponent("processor_config.json")
        try Data(#"{"image_processor": \#(value), "processor_class": "LlavaProcessor"}"#.utf8).write(to: processor)
        let text = importError(dir)
        #expect(text.contains(processor.path) && text.contains("'image_processor' must be an object, found"), "\(text)")
    }

    /// transformers 5 takes processor_config.json's nested image_processor over a
    /// preprocessor_config.json beside it (a stale one, say); a null one leaves the other file in charge.
    @Test func nestedImageProcessorWinsOverPreprocessorConfig() throws {
        let dir = try copyFixture("llava-a")
        let stale = #"{"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 32}, "crop_size": 32, "image_mean": [0.9, 0.1, 0.9]}"#
        try Data(stale.utf8).write(to: dir.appendingPathComponent("preprocessor_config.json"))
        func importedMean(_ dir: URL) throws -> [Float]? {
            let result = try CheckpointImporter(checkpoint: dir, outputDirectory: temporaryDirectory()).run()
            var catalog = Catalog()
            try catalog.load(directory: result.mainPath.deletingLastPathComponent())
            return try catalog.component("llava-a-vision", kind: .encoder).preprocess?.mean
        }
        #expect(try importedMean(dir) == [0.48145466, 0.4578275, 0.40821073])
        try Data(#"{"image_processor": null, "processor_class": "LlavaProcessor"}"#.utf8).write(to: dir.appendingPathComponent("processor_config.json"))
        #expect(try importedMean(dir) == [0.9, 0.1, 0.9])
    }

    @Test(arguments: [
        (["patch_size": 0], "vision_config.patch_size must be 1...32, found 0"),
        (["patch_size": 64], "vision_config.patch_size must be 1...32, found 64"),
        (["image_size": 8_589_934_592, "patch_size": 1], "vision_config.image_size must be 1...8192, found 8589934592"),
        (["image_size": -32], "vision_config.image_size must be 1...8192, found -32"),
    ] as [([String: Int], String)])
    func visionSizesAreBounded(values: [String: Int], expected: String) throws {
        let dir = try copyFixture("llava-a")
        try editConfig(dir) { try vision(&$0, values) }
        let text = importError(dir)
        #expect(text.contains(dir.appendingPathComponent("config.json").path) && text.contains(expected), "\(text)")
    }

    @Test(arguments: ["mlp9223372036854775807x_gelu", "mlp17x_gelu", "mlp0x_gelu"])
    func tinyLLaVAConnectorDepthIsBounded(type: String) throws {
        let dir = try copyFixture("tinyllava-phi-siglip")
        try editConfig(dir) { $0["connector_type"] = type }
        let text = importError(dir)
        #expect(text.contains("config.json") && text.contains("connector_type is \"\(type)\"")
                && text.contains("\"mlp{N}x_gelu\" (N from 1 to 16)"), "\(text)")
    }
}
