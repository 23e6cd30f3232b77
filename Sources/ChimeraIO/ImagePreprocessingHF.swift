// Reading transformers' preprocessor_config.json into ImagePreprocessing.
import Foundation

public enum ImagePreprocessingError: LocalizedError, Equatable {
    case unreadableConfig(file: String, reason: String)
    case invalidConfig(file: String, reason: String)
    case unsupportedProcessor(file: String, type: String)
    case unsupportedField(file: String, field: String, reason: String)

    public var errorDescription: String? {
        switch self {
        case let .unreadableConfig(file, reason):
            return "Cannot read preprocessor config '\(file)': \(reason)"
        case let .invalidConfig(file, reason):
            return "Invalid preprocessor config '\(file)': \(reason)"
        case let .unsupportedProcessor(file, type):
            return "Preprocessor config '\(file)': unsupported image processor '\(type)' "
                + "(supported: CLIPImageProcessor, SiglipImageProcessor)"
        case let .unsupportedField(file, field, reason):
            return "Preprocessor config '\(file)': unsupported '\(field)': \(reason)"
        }
    }
}

extension ImagePreprocessing {
    static let openAIClipMean: [Float] = [0.48145466, 0.4578275, 0.40821073].map { Float($0 as Double) }
    static let openAIClipStd: [Float] = [0.26862954, 0.26130258, 0.27577711].map { Float($0 as Double) }

    /// Reads a transformers `preprocessor_config.json` (or a `processor_config.json` with a nested
    /// `"image_processor"` object). `padToSquare` is always false here (it is a
    /// model-level setting in LLaVA/TinyLLaVA, `image_aspect_ratio == "pad"`); set it afterwards.
    public init(huggingFaceConfig url: URL) throws {
        if let reason = notARegularFile(url.path) { throw ImagePreprocessingError.unreadableConfig(file: url.path, reason: reason) }
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            let reason = FileManager.default.fileExists(atPath: url.path)
                ? (error as NSError).localizedDescription : "no such file"
            throw ImagePreprocessingError.unreadableConfig(file: url.path, reason: reason)
        }
        try self.init(huggingFaceConfigData: data, name: url.path)
    }

    public init(huggingFaceConfigData data: Data, name: String = "preprocessor_config.json") throws {
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: data)
        } catch {
            throw ImagePreprocessingError.invalidConfig(file: name, reason: "not valid JSON (\(error.localizedDescription))")
        }
        guard let top = object as? [String: Any] else {
            throw ImagePreprocessingError.invalidConfig(file: name, reason: "top level is not a JSON object")
        }
        // transformers 5 processor_config.json nests the image processor under "image_processor".
        let json: [String: Any]
        if top["image_processor_type"] == nil, top["feature_extractor_type"] == nil, let nested = top["image_processor"] {
            guard let object = nested as? [String: Any] else {
                let found = nested is NSNull ? "null" : nested is String ? "a string" : nested is [Any] ? "a list" : "a number"
                throw ImagePreprocessingError.invalidConfig(file: name, reason: "'image_processor' must be an object, found \(found)")
            }
            json = object
        } else {
            json = top
        }
        func unsupported(_ field: String, _ reason: String) -> ImagePreprocessingError {
            .unsupportedField(file: name, field: field, reason: reason)
        }
        func invalid(_ reason: String) -> ImagePreprocessingError { .invalidConfig(file: name, reason: reason) }
        func int(_ v: Any?) -> Int? {
            guard let n = v as? NSNumber else { return nil }
            let d = n.doubleValue
            return d == d.rounded() && abs(d) < 1e9 ? Int(d) : nil
        }
        // Absent is the processor class's default; null is Python's None, which the processor
        // takes as false (`if do_normalize:`), not as the default.
        func bool(_ key: String, default value: Bool) throws -> Bool {
            guard let raw = json[key] else { return value }
            if raw is NSNull { return false }
            guard let b = raw as? Bool else { throw invalid("'\(key)' must be true or false") }
            return b
        }
        // A null value (not a flag) is refused, as the processor refuses it when the step runs:
        // "image_mean and image_std must both be specified", "size ... must be specified".
        func nullRefused(_ key: String) -> ImagePreprocessingError { invalid("'\(key)' is null (transformers refuses it: it must be specified)") }
        func floats(_ key: String, default value: [Float]) throws -> [Float] {
            guard let raw = json[key] else { return value }
            if raw is NSNull { throw nullRefused(key) }
            if let n = raw as? NSNumber { return Array(repeating: Float(n.doubleValue), count: 3) }
            guard let list = raw as? [NSNumber], list.count == 3 else {
                throw invalid("'\(key)' must be a number or a list of 3 numbers")
            }
            return list.map { Float($0.doubleValue) }  // Python float -> float32, like numpy
        }

        // Processor class.
        let type = (json["image_processor_type"] as? String) ?? (json["feature_extractor_type"] as? String)
        let isClip: Bool
        switch type {
        case "CLIPImageProcessor", "CLIPImageProcessorPil", "CLIPImageProcessorFast", "CLIPFeatureExtractor":
            isClip = true
        case "SiglipImageProcessor", "SiglipImageProcessorPil", "SiglipImageProcessorFast":
            isClip = false
        case nil:
            throw invalid("missing 'image_processor_type'")
        case let other?:
            throw ImagePreprocessingError.unsupportedProcessor(file: name, type: other)
        }

        // Features we do not implement.
        if try !bool("do_resize", default: true) { throw unsupported("do_resize", "false is not supported (images are always resized)") }
        if try !bool("do_convert_rgb", default: true) { throw unsupported("do_convert_rgb", "false is not supported (images are always RGB)") }
        if try bool("do_pad", default: false) { throw unsupported("do_pad", "padding batches is not supported") }
        if let r = json["resample"] {
            // (transformers refuses a null one: "size and resample must be specified")
            guard int(r) == 3 else { throw unsupported("resample", "only 3 (PIL BICUBIC) is implemented, got \(r is NSNull ? "null" : "\(r)")") }
        }
        for key in ["crop_pct", "image_grid_pinpoints", "max_image_tiles", "do_image_splitting"] where json[key] != nil && !(json[key] is NSNull) {
            throw unsupported(key, "not supported by CLIP/SigLIP preprocessing")
        }

        // Size.
        let resize: ResizeMode
        let size: Int
        let rawSize = json["size"]
        if rawSize is NSNull { throw nullRefused("size") }
        if rawSize == nil {
            (resize, size) = isClip ? (.shortestEdge, 224) : (.exact, 224)
        } else if let n = int(rawSize) {
            (resize, size) = (.shortestEdge, n)  // get_size_dict(int, default_to_square=False)
        } else if let dict = rawSize as? [String: Any] {
            let keys = Set(dict.filter { !($0.value is NSNull) }.keys)
            if keys == ["shortest_edge"], let n = int(dict["shortest_edge"]) {
                (resize, size) = (.shortestEdge, n)
            } else if keys == ["height", "width"], let h = int(dict["height"]), let w = int(dict["width"]) {
                guard h == w else { throw unsupported("size", "non-square height \(h) x width \(w)") }
                (resize, size) = (.exact, h)
            } else {
                throw unsupported("size", "expected {\"shortest_edge\": N} or {\"height\": H, \"width\": W}, got keys \(keys.sorted())")
            }
        } else {
            throw invalid("'size' must be an integer or an object")
        }

        // Crop.
        var cropSize: Int? = nil
        if try bool("do_center_crop", default: isClip) {
            let raw = json["crop_size"]
            if raw is NSNull { throw nullRefused("crop_size") }
            if raw == nil {
                guard isClip else { throw invalid("do_center_crop is true but 'crop_size' is missing") }
                cropSize = 224
            } else if let n = int(raw) {
                cropSize = n
            } else if let dict = raw as? [String: Any], let h = int(dict["height"]), let w = int(dict["width"]) {
                guard h == w else { throw unsupported("crop_size", "non-square height \(h) x width \(w)") }
                cropSize = h
            } else {
                throw invalid("'crop_size' must be an integer or {\"height\": H, \"width\": W}")
            }
        }

        // Rescale / normalize.
        var rescale: Float = 1 / 255
        if try bool("do_rescale", default: true) {
            if json["rescale_factor"] is NSNull { throw nullRefused("rescale_factor") }
            if let raw = json["rescale_factor"] {
                guard let n = raw as? NSNumber else { throw invalid("'rescale_factor' must be a number") }
                rescale = Float(n.doubleValue)
            }
        } else {
            rescale = 1
        }
        var mean: [Float] = [0, 0, 0], std: [Float] = [1, 1, 1]
        if try bool("do_normalize", default: true) {
            mean = try floats("image_mean", default: isClip ? Self.openAIClipMean : [0.5, 0.5, 0.5])
            std = try floats("image_std", default: isClip ? Self.openAIClipStd : [0.5, 0.5, 0.5])
            guard !std.contains(0) else { throw invalid("'image_std' contains 0") }
        }
        self.init(resize: resize, size: size, cropSize: cropSize, mean: mean, std: std,
                  rescaleFactor: rescale, padToSquare: false)
        try validate(invalid)  // the manifest form's checks, size bounds included
    }
}
