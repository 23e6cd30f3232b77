import ChimeraTensor
import Foundation
import Testing
@testable import ChimeraIO

@Suite("Image preprocessing")
struct ImagePreprocessingTests {
    /// Our pixel tensors vs transformers' CLIPImageProcessorPil / SiglipImageProcessorPil (+ TinyLLaVA
    /// expand2square). Required tolerance: max |diff| < 1e-5 (i.e. identical uint8 images after
    /// resize/crop); in practice the tensors are bit-identical (checked: maxDiff == 0).
    @Test func pixelValuesMatchTransformers() throws {
        let index = try ImageFixtures.index()
        #expect(index.cases.count >= 15)
        for c in index.cases {
            let decoded = try ImageDecoder.decode(contentsOf: ImageFixtures.url(c.image))
            let input = c.composite_alpha ? decoded.compositedOnWhite() : decoded
            let tensor = c.preprocess.pixelValues(input)
            #expect(tensor.shape == c.shape, "\(c.name): shape \(tensor.shape) vs \(c.shape)")
            #expect(c.preprocess.outputShape(width: decoded.width, height: decoded.height) == c.shape, "\(c.name)")
            let expected = try ImageFixtures.floats(c.values)
            let ours = tensor.toArray()
            guard ours.count == expected.count else { Issue.record("\(c.name): count mismatch"); continue }
            let maxDiff = zip(ours, expected).map { abs($0 - $1) }.max() ?? 0
            #expect(maxDiff < 1e-5, "\(c.name): max abs diff \(maxDiff)")
            #expect(maxDiff == 0, "\(c.name): not bit-identical, max abs diff \(maxDiff)")

            if let config = c.hf_config {
                let fromHF = try ImagePreprocessing(huggingFaceConfig: ImageFixtures.url(config))
                #expect(fromHF == c.preprocess, "\(c.name): HF config parse differs")
            }
        }
    }

    /// Large images (regenerated procedurally): exact uint8 agreement of pad/resize/crop with PIL.
    @Test func largeProceduralImagesMatchPIL() throws {
        for p in try ImageFixtures.index().procedural {
            let image = ImageFixtures.proceduralImage(width: p.width, height: p.height)
            let prepared = p.preprocess.preparedImage(image)
            #expect([prepared.height, prepared.width, 3] == p.prepared_shape, "\(p.name)")
            if let file = p.prepared {
                let expected = try ImageFixtures.bytes(file)
                let maxDiff = zip(prepared.pixels, expected).map { abs(Int($0) - Int($1)) }.max() ?? 0
                #expect(prepared.pixels.count == expected.count && maxDiff == 0, "\(p.name): max diff \(maxDiff)")
            } else {
                let sum = prepared.pixels.reduce(0) { $0 + Int($1) }
                let weighted = prepared.pixels.enumerated().reduce(0) { $0 + Int($1.element) * ($1.offset % 251 + 1) }
                #expect(sum == p.prepared_sum, "\(p.name)")
                #expect(weighted == p.prepared_weighted_sum, "\(p.name)")
            }
        }
    }

    /// Bicubic resize vs PIL's `Image.resize(BICUBIC)` over random size pairs, half of them in
    /// Pillow 13's vertical-pass-first regime: exact (tolerance 0).
    @Test func resizeMatchesPILOverSizeGrid() throws {
        let index = try ImageFixtures.index()
        let blob = try ImageFixtures.bytes("resize_grid.u8")
        #expect(index.resize_grid.filter(\.vertical_first).count >= 10)
        for g in index.resize_grid {
            let source = ImageFixtures.proceduralImage(width: g.width, height: g.height)
            let ours = PillowResample.resizeBicubic(source, width: g.out_width, height: g.out_height)
            let expected = Array(blob[g.offset ..< g.offset + g.out_width * g.out_height * 3])
            let maxDiff = zip(ours.pixels, expected).map { abs(Int($0) - Int($1)) }.max() ?? 0
            #expect(maxDiff == 0, "\(g.width)x\(g.height) -> \(g.out_width)x\(g.out_height) (vertical first: \(g.vertical_first)): max diff \(maxDiff)")
        }
    }

    @Test func resizeOutputSizeRounding() {
        let p = ImagePreprocessing(resize: .shortestEdge, size: 336, cropSize: 336, mean: [0, 0, 0], std: [1, 1, 1])
        #expect(p.resizedSize(width: 1000, height: 800) == (height: 336, width: 420))
        #expect(p.resizedSize(width: 333, height: 1000) == (height: 1009, width: 336))  // int(336*1000/333)=1009
        #expect(p.resizedSize(width: 500, height: 500) == (height: 336, width: 336))
        let s = ImagePreprocessing(resize: .exact, size: 384, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5])
        #expect(s.resizedSize(width: 1000, height: 20) == (height: 384, width: 384))
    }

    @Test func padColorTruncates() {
        let p = ImagePreprocessing(resize: .shortestEdge, size: 336, cropSize: 336,
                                   mean: ImagePreprocessing.openAIClipMean, std: ImagePreprocessing.openAIClipStd,
                                   padToSquare: true)
        #expect(p.padColor == (122, 116, 104))
        let s = ImagePreprocessing(resize: .exact, size: 384, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5])
        #expect(s.padColor == (127, 127, 127))
    }

    // MARK: Manifest Codable

    @Test func manifestRoundTrip() throws {
        let json = #"{"resize": "shortest_edge", "size": 336, "crop_size": 336, "mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711], "pad_to_square": true}"#
        let p = try JSONDecoder().decode(ImagePreprocessing.self, from: Data(json.utf8))
        #expect(p.resize == .shortestEdge && p.size == 336 && p.cropSize == 336 && p.padToSquare)
        #expect(p.rescaleFactor == Float(1) / 255)
        #expect(p.mean == ImagePreprocessing.openAIClipMean)
        let again = try JSONDecoder().decode(ImagePreprocessing.self, from: JSONEncoder().encode(p))
        #expect(again == p)
        let minimal = try JSONDecoder().decode(ImagePreprocessing.self, from: Data(
            #"{"resize": "exact", "size": 384, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}"#.utf8))
        #expect(minimal.cropSize == nil && !minimal.padToSquare && minimal.resize == .exact)
    }

    private func decodingMessage(_ json: String) -> String {
        do {
            _ = try JSONDecoder().decode(ImagePreprocessing.self, from: Data(json.utf8))
            return "no error"
        } catch let DecodingError.dataCorrupted(context) {
            return context.debugDescription
        } catch {
            return "\(error)"
        }
    }

    @Test func manifestRejectsUnknownResizeMode() {
        let message = decodingMessage(#"{"resize": "longest_edge", "size": 336, "mean": [0,0,0], "std": [1,1,1]}"#)
        #expect(message.contains("unknown resize mode 'longest_edge'"), "\(message)")
        #expect(message.contains("shortest_edge") && message.contains("exact"))
    }

    @Test func manifestRejectsUnknownKeysAndBadValues() {
        let typo = decodingMessage(#"{"resize": "exact", "size": 336, "mean": [0,0,0], "std": [1,1,1], "padToSquare": true}"#)
        #expect(typo.contains("unknown preprocess key 'padToSquare'"), "\(typo)")
        let badMean = decodingMessage(#"{"resize": "exact", "size": 336, "mean": [0,0], "std": [1,1,1]}"#)
        #expect(badMean.contains("mean must have 3 values"), "\(badMean)")
        let zeroStd = decodingMessage(#"{"resize": "exact", "size": 336, "mean": [0,0,0], "std": [1,0,1]}"#)
        #expect(zeroStd.contains("std"), "\(zeroStd)")
    }

    /// Resizing only what the centre crop keeps gives the very pixels of resizing the whole image
    /// and cropping it: up- and downscaled axes, either pass first, odd offsets, an axis left as it is.
    @Test(arguments: [(61, 45, 24), (45, 61, 24), (1, 300, 16), (300, 1, 16), (24, 90, 24), (200, 37, 30), (33, 33, 7), (512, 40, 32),
                      (40, 400, 24)])  // (the last one shrinks its height so much more that the vertical pass runs first)
    func resizingWhatTheCropKeepsIsExact(width: Int, height: Int, crop: Int) {
        let image = ImageFixtures.proceduralImage(width: width, height: height)
        let config = ImagePreprocessing(resize: .shortestEdge, size: crop + 3, cropSize: crop, mean: [0, 0, 0], std: [1, 1, 1])
        let target = config.resizedSize(width: width, height: height)
        let whole = ImagePreprocessing.centerCrop(PillowResample.resizeBicubic(image, width: target.width, height: target.height), height: crop, width: crop)
        let kept = config.preparedImage(image)
        #expect(kept.width == crop && kept.height == crop && kept.pixels == whole.pixels, "\(width)x\(height) → \(target), crop \(crop)")
    }

    // MARK: HF preprocessor_config.json

    private func hf(_ json: String) throws -> ImagePreprocessing {
        try ImagePreprocessing(huggingFaceConfigData: Data(json.utf8), name: "test/preprocessor_config.json")
    }

    @Test func parsesRealWorldConfigs() throws {
        // openai/clip-vit-large-patch14-336 (old style: ints, feature_extractor_type)
        let clip = try hf(#"""
        {"crop_size": 336, "do_center_crop": true, "do_normalize": true, "do_resize": true,
         "feature_extractor_type": "CLIPFeatureExtractor",
         "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
         "resample": 3, "size": 336}
        """#)
        #expect(clip == ImagePreprocessing(resize: .shortestEdge, size: 336, cropSize: 336,
                                           mean: ImagePreprocessing.openAIClipMean, std: ImagePreprocessing.openAIClipStd))
        // google/siglip-so400m-patch14-384
        let siglip = try hf(#"""
        {"do_normalize": true, "do_rescale": true, "do_resize": true, "image_mean": [0.5, 0.5, 0.5],
         "image_processor_type": "SiglipImageProcessor", "image_std": [0.5, 0.5, 0.5],
         "processor_class": "SiglipProcessor", "resample": 3, "rescale_factor": 0.00392156862745098,
         "size": {"height": 384, "width": 384}}
        """#)
        #expect(siglip == ImagePreprocessing(resize: .exact, size: 384, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]))
        let newStyle = try hf(#"""
        {"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 224},
         "crop_size": {"height": 224, "width": 224}, "do_normalize": false}
        """#)
        #expect(newStyle.cropSize == 224 && newStyle.mean == [0, 0, 0] && newStyle.std == [1, 1, 1])
        // transformers 5 processor_config.json (LlavaProcessor) with a nested image_processor
        let nested = try hf(#"""
        {"image_processor": {"crop_size": {"height": 64, "width": 64}, "do_center_crop": true,
          "image_processor_type": "CLIPImageProcessor", "resample": 3, "rescale_factor": 0.00392156862745098,
          "size": {"shortest_edge": 64}}, "image_token": "<image>", "processor_class": "LlavaProcessor"}
        """#)
        #expect(nested == ImagePreprocessing(resize: .shortestEdge, size: 64, cropSize: 64,
                                             mean: ImagePreprocessing.openAIClipMean, std: ImagePreprocessing.openAIClipStd))
    }

    /// A null flag is Python's None, which the processor takes as false (not the class default):
    /// no normalizing, no rescaling, no crop; a null resample transformers refuses, and so do we.
    @Test func nullFlagsAreFalseAsInTransformers() throws {
        let base = #""image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 64}, "crop_size": 64"#
        let unnormalized = try hf("{\(base), \"do_normalize\": null}")
        #expect(unnormalized.mean == [0, 0, 0] && unnormalized.std == [1, 1, 1])
        #expect(try hf("{\(base), \"do_rescale\": null}").rescaleFactor == 1)
        #expect(try hf("{\(base), \"do_center_crop\": null}").cropSize == nil)
        #expect(try hf("{\(base)}").cropSize == 64)  // absent: CLIP's default crops
        #expect(hfError("{\(base), \"resample\": null}").contains("only 3 (PIL BICUBIC) is implemented, got null"))
        #expect(hfError("{\(base), \"do_convert_rgb\": null}").contains("'do_convert_rgb'"))
        // A null value (not a flag) the processor refuses when its step runs; unused, it is no matter.
        for key in ["image_mean", "image_std", "rescale_factor", "size", "crop_size"] {
            let json = key == "size" ? #"{"image_processor_type": "CLIPImageProcessor", "crop_size": 64, "size": null}"#
                : key == "crop_size" ? #"{"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 64}, "crop_size": null}"#
                : "{\(base), \"\(key)\": null}"
            #expect(hfError(json).contains("'\(key)' is null (transformers refuses it: it must be specified)"), "\(key): \(hfError(json))")
        }
        #expect(try hf("{\(base), \"do_normalize\": false, \"image_mean\": null}").mean == [0, 0, 0])
    }

    /// Transparent images: composited onto white by default (transformers' processors), or their
    /// alpha dropped (`alpha: "drop"`, PIL's convert("RGB") as TinyLLaVA's loader does).
    @Test func alphaIsCompositedOrDropped() throws {
        let image = RGBImage(width: 1, height: 1, pixels: [0, 100, 200], alpha: [0])
        var p = ImagePreprocessing(resize: .exact, size: 1, mean: [0, 0, 0], std: [1, 1, 1], rescaleFactor: 1)
        #expect(p.pixelValues(p.inputImage(image)).toArray() == [255, 255, 255])
        p.alpha = .drop
        #expect(p.pixelValues(p.inputImage(image)).toArray() == [0, 100, 200])
        let decoded = try JSONDecoder().decode(ImagePreprocessing.self, from: JSONEncoder().encode(p))
        #expect(decoded.alpha == .drop)
        #expect(decodingMessage(#"{"resize": "exact", "size": 4, "mean": [0, 0, 0], "std": [1, 1, 1], "alpha": "keep"}"#).contains("keep"))
    }

    private func hfError(_ json: String) -> String {
        do {
            _ = try hf(json)
            return "no error"
        } catch {
            return error.localizedDescription
        }
    }

    @Test func hfConfigErrors() {
        let type = hfError(#"{"image_processor_type": "LlavaNextImageProcessor", "size": {"shortest_edge": 336}}"#)
        #expect(type.contains("unsupported image processor 'LlavaNextImageProcessor'") && type.contains("test/preprocessor_config.json"))
        let rect = hfError(#"{"image_processor_type": "SiglipImageProcessor", "size": {"height": 384, "width": 512}}"#)
        #expect(rect.contains("'size'") && rect.contains("non-square"), "\(rect)")
        let longest = hfError(#"{"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 800, "longest_edge": 1333}}"#)
        #expect(longest.contains("'size'"), "\(longest)")
        let bilinear = hfError(#"{"image_processor_type": "CLIPImageProcessor", "resample": 2}"#)
        #expect(bilinear.contains("'resample'"), "\(bilinear)")
        let missing = hfError(#"{"size": 224}"#)
        #expect(missing.contains("image_processor_type"), "\(missing)")
        let notJSON = hfError("size: 224")
        #expect(notJSON.contains("not valid JSON"), "\(notJSON)")
        do {
            _ = try ImagePreprocessing(huggingFaceConfig: URL(fileURLWithPath: "/nonexistent/preprocessor_config.json"))
            Issue.record("expected an error")
        } catch {
            #expect(error.localizedDescription.contains("/nonexistent/preprocessor_config.json"))
        }
    }

    // MARK: Performance

    @Test func resizeLargeImageIsFast() {
        let image = ImageFixtures.proceduralImage(width: 1000, height: 800)
        let p = ImagePreprocessing(resize: .shortestEdge, size: 336, cropSize: 336,
                                   mean: ImagePreprocessing.openAIClipMean, std: ImagePreprocessing.openAIClipStd)
        let start = Date()
        let t = p.pixelValues(image)
        let elapsed = Date().timeIntervalSince(start)
        print("1000x800 -> [3, 336, 336] pixelValues: \(String(format: "%.1f", elapsed * 1000)) ms")
        #expect(t.shape == [3, 336, 336])
        #expect(elapsed < 5)
    }
}
