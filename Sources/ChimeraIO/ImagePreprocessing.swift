// Image preprocessing matching transformers' PIL-backend ("slow") image processors:
// CLIPImageProcessorPil / SiglipImageProcessorPil (transformers 5.x; CLIPImageProcessor and
// SiglipImageProcessor before 5.0), plus the LLaVA/TinyLLaVA `expand2square` pad step.
import ChimeraTensor
import Foundation

public struct ImagePreprocessing: Codable, Sendable, Equatable {
    public enum ResizeMode: String, Codable, Sendable, Equatable, CaseIterable {
        /// Scale so the shorter side equals `size`, keeping the aspect ratio (CLIP).
        case shortestEdge = "shortest_edge"
        /// Resize to exactly `size` x `size` (SigLIP).
        case exact

        public init(from decoder: Decoder) throws {
            let container = try decoder.singleValueContainer()
            let raw = try container.decode(String.self)
            guard let mode = ResizeMode(rawValue: raw) else {
                throw DecodingError.dataCorruptedError(
                    in: container,
                    debugDescription: "unknown resize mode '\(raw)' (expected one of: "
                        + ResizeMode.allCases.map { "'\($0.rawValue)'" }.joined(separator: ", ") + ")")
            }
            self = mode
        }
    }

    public var resize: ResizeMode
    public var size: Int
    /// Center crop to cropSize x cropSize after resizing, when set.
    public var cropSize: Int?
    public var mean: [Float]
    public var std: [Float]
    public var rescaleFactor: Float
    /// LLaVA/TinyLLaVA `expand2square`: pad to a square filled with `int(mean * 255)` before processing.
    public var padToSquare: Bool
    /// What a transparent image's alpha does (see Alpha).
    public var alpha: Alpha = .compositeOnWhite

    /// transformers' processors composite a transparent image onto white (`convert_to_rgb`);
    /// loaders that open images with PIL's `convert("RGB")` first (TinyLLaVA's) drop the alpha.
    public enum Alpha: String, Codable, Sendable, CaseIterable {
        case compositeOnWhite = "composite_on_white"
        case drop
    }

    public init(resize: ResizeMode, size: Int, cropSize: Int? = nil, mean: [Float], std: [Float],
                rescaleFactor: Float = 1 / 255, padToSquare: Bool = false) {
        self.resize = resize
        self.size = size
        self.cropSize = cropSize
        self.mean = mean
        self.std = std
        self.rescaleFactor = rescaleFactor
        self.padToSquare = padToSquare
    }

    // MARK: Codable (manifest form, snake_case)

    enum CodingKeys: String, CodingKey, CaseIterable {
        case resize, size, mean, std
        case cropSize = "crop_size"
        case rescaleFactor = "rescale_factor"
        case padToSquare = "pad_to_square"
        case alpha
    }

    private struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    public init(from decoder: Decoder) throws {
        // Reject misspelled keys instead of silently using defaults.
        let all = try decoder.container(keyedBy: AnyKey.self)
        let known = Set(CodingKeys.allCases.map(\.stringValue))
        if let unknown = all.allKeys.first(where: { !known.contains($0.stringValue) }) {
            throw DecodingError.dataCorrupted(.init(
                codingPath: decoder.codingPath + [unknown],
                debugDescription: "unknown preprocess key '\(unknown.stringValue)' (expected: "
                    + CodingKeys.allCases.map(\.stringValue).joined(separator: ", ") + ")"))
        }
        let c = try decoder.container(keyedBy: CodingKeys.self)
        resize = try c.decode(ResizeMode.self, forKey: .resize)
        size = try c.decode(Int.self, forKey: .size)
        cropSize = try c.decodeIfPresent(Int.self, forKey: .cropSize)
        // Through Double, as numpy does (Python float -> float32).
        mean = try c.decode([Double].self, forKey: .mean).map { Float($0) }
        std = try c.decode([Double].self, forKey: .std).map { Float($0) }
        rescaleFactor = try c.decodeIfPresent(Double.self, forKey: .rescaleFactor).map { Float($0) } ?? 1 / 255
        padToSquare = try c.decodeIfPresent(Bool.self, forKey: .padToSquare) ?? false
        alpha = try c.decodeIfPresent(Alpha.self, forKey: .alpha) ?? .compositeOnWhite
        try validate { DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: $0)) }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(resize, forKey: .resize)
        try c.encode(size, forKey: .size)
        try c.encodeIfPresent(cropSize, forKey: .cropSize)
        try c.encode(mean, forKey: .mean)
        try c.encode(std, forKey: .std)
        try c.encode(rescaleFactor, forKey: .rescaleFactor)
        try c.encode(padToSquare, forKey: .padToSquare)
        if alpha != .compositeOnWhite { try c.encode(alpha, forKey: .alpha) }
    }

    /// The largest `size` / `crop_size` (and a ViT's image_size): far above any real encoder, small
    /// enough that sizes multiplied together cannot overflow.
    public static let maxSide = 8192

    func validate(_ makeError: (String) -> Error) throws {
        for (name, value) in [("size", size as Int?), ("crop_size", cropSize)] {
            if let value, !(1...Self.maxSide).contains(value) {
                throw makeError("\(name) must be between 1 and \(Self.maxSide), got \(value)")
            }
        }
        if mean.count != 3 { throw makeError("mean must have 3 values, got \(mean.count)") }
        if std.count != 3 { throw makeError("std must have 3 values, got \(std.count)") }
        if std.contains(where: { !($0 > 0 && $0.isFinite) }) { throw makeError("std values must be finite and positive, got \(std)") }
        // (A negative or zero factor makes every image one colour or its negative; an infinite one NaN.)
        if !(rescaleFactor > 0 && rescaleFactor.isFinite) { throw makeError("rescale_factor must be finite and positive, got \(rescaleFactor)") }
        // Means are of rescaled pixels (0...1, or 0...255 without rescaling): a huge one is garbage,
        // and the padding colour (mean · 255) must fit an integer.
        if mean.contains(where: { !$0.isFinite || abs($0) > 1e4 }) { throw makeError("mean values must be finite and within ±10000, got \(mean)") }
        // Normalized pixels (x · rescale − mean) / std must stay far from float32's overflow (real
        // encoders see values within a few units): a std of 1e-38 made every image NaN.
        let largest = zip(mean, std).map { (255 * Double(rescaleFactor) + abs(Double($0))) / Double($1) }.max() ?? 0
        if !(largest <= 1e6) {
            throw makeError("mean, std and rescale_factor make normalized pixels as large as \(largest) (expected within ±1e6: is a std or rescale_factor off by powers of ten?)")
        }
    }

    // MARK: Output geometry

    /// (height, width) after resizing an image of the given size; transformers'
    /// `get_resize_output_image_size(default_to_square=False)` for shortest_edge.
    public func resizedSize(width: Int, height: Int) -> (height: Int, width: Int) {
        switch resize {
        case .exact:
            return (size, size)
        case .shortestEdge:
            let (short, long) = width <= height ? (width, height) : (height, width)
            // Python: int(size * long / short) -- exact int product, correctly rounded division.
            let newLong = Int(Double(size * long) / Double(short))
            return width <= height ? (newLong, size) : (size, newLong)
        }
    }

    /// Shape of `pixelValues` for an image of the given size: [3, H, W].
    public func outputShape(width: Int, height: Int) -> [Int] {
        var (w, h) = (width, height)
        if padToSquare { w = max(w, h); h = w }
        let r = resizedSize(width: w, height: h)
        if let cropSize { return [3, cropSize, cropSize] }
        return [3, r.height, r.width]
    }

    /// The side of the square every image comes out as, nil when the output follows the image's
    /// aspect ratio (shortest_edge resize with neither crop nor padding).
    public var squareSide: Int? { cropSize ?? (resize == .exact || padToSquare ? size : nil) }

    /// The most pixels a padded or resized image may hold: as many as ImageDecoder accepts
    /// (CIC_MAX_PIXELS in codecs.c).
    public static let maxIntermediatePixels = 1 << 28

    /// Refuses an image whose padded square or resized form would exceed `maxIntermediatePixels`:
    /// without a crop the whole resized image is built (a 1 x 65535 strip with shortest edge 336
    /// would be 336 x 22 million pixels, 22 GB); with one only what it keeps is built, and the
    /// limit stays as a bound on what counts as an image.
    public func checkIntermediateSize(width: Int, height: Int, file: String) throws {
        func refuse(_ step: String, _ w: Int, _ h: Int) -> ImageError {
            .tooLargeToPreprocess(file: file, width: width, height: height,
                                  reason: "\(step) gives \(w)x\(h), more than the \(Self.maxIntermediatePixels) pixels supported")
        }
        var (w, h) = (width, height)
        if padToSquare {
            w = max(w, h); h = w
            if Double(w) * Double(h) > Double(Self.maxIntermediatePixels) { throw refuse("padding to a square", w, h) }
        }
        let r = resizedSize(width: w, height: h)
        if Double(r.width) * Double(r.height) > Double(Self.maxIntermediatePixels) {
            throw refuse("resizing to \(resize.rawValue) \(size)", r.width, r.height)
        }
    }

    // MARK: Pipeline

    /// The uint8 image the processor normalises: pad (optional), bicubic resize, center crop.
    public func preparedImage(_ image: RGBImage) -> RGBImage {
        var img = image
        img.alpha = nil
        if padToSquare { img = Self.expandToSquare(img, background: padColor) }
        let target = resizedSize(width: img.width, height: img.height)
        guard let cropSize else { return PillowResample.resizeBicubic(img, width: target.width, height: target.height) }
        // Only what the centre crop keeps is resized, where it lies inside the image (the crop's
        // own offsets, as centerCrop takes them); the crop then takes the rest.
        func kept(_ side: Int) -> Range<Int>? { side >= cropSize ? (side - cropSize) / 2..<(side - cropSize) / 2 + cropSize : nil }
        img = PillowResample.resizeBicubic(img, width: target.width, height: target.height, columns: kept(target.width), rows: kept(target.height))
        return Self.centerCrop(img, height: cropSize, width: cropSize)
    }

    /// The image as `alpha` says the loader sees it: composited onto white, or as it is (its alpha
    /// then ignored).
    public func inputImage(_ image: RGBImage) -> RGBImage {
        alpha == .compositeOnWhite && image.hasAlpha ? image.compositedOnWhite() : image
    }

    /// Model input for one image: Tensor [3, H, W] (channels first, float32).
    ///
    /// `image.pixels` are used as they are (alpha ignored, as after PIL `convert("RGB")`); for
    /// `alpha` composite_on_white pass `image.compositedOnWhite()` (see `inputImage`).
    public func pixelValues(_ image: RGBImage) -> Tensor {
        let img = preparedImage(image)
        let plane = img.width * img.height
        // numpy: float32(float64(v) * rescale_factor), then (x - mean) / std in float32.
        let scale = Self.pythonScale(rescaleFactor)
        var lut = [Float](repeating: 0, count: 3 * 256)
        for c in 0..<3 {
            for v in 0..<256 {
                let r = Float(Double(v) * scale)
                lut[c * 256 + v] = (r - mean[c]) / std[c]
            }
        }
        var values = [Float](repeating: 0, count: 3 * plane)
        values.withUnsafeMutableBufferPointer { out in
            img.pixels.withUnsafeBufferPointer { px in
                lut.withUnsafeBufferPointer { table in
                    for i in 0..<plane {
                        out[i] = table[Int(px[i * 3])]
                        out[plane + i] = table[256 + Int(px[i * 3 + 1])]
                        out[2 * plane + i] = table[512 + Int(px[i * 3 + 2])]
                    }
                }
            }
        }
        return Tensor(shape: [3, img.height, img.width], values: values)
    }

    /// `tuple(int(x * 255) for x in image_mean)`.
    public var padColor: (UInt8, UInt8, UInt8) {
        func c(_ x: Float) -> UInt8 { UInt8(clamping: Int((Double(x) * 255).rounded(.towardZero))) }
        return (c(mean[0]), c(mean[1]), c(mean[2]))
    }

    /// The Python-side scale: configs store 1/255 as a double; a Float field cannot hold it
    /// exactly, so the float nearest to 1/255 stands for the double 1/255.
    static func pythonScale(_ f: Float) -> Double {
        f == Float(1.0 / 255.0) ? 1.0 / 255.0 : Double(f)
    }

    /// LLaVA's `expand2square`: paste at ((S - w) // 2, (S - h) // 2) on an S x S background.
    public static func expandToSquare(_ image: RGBImage, background: (UInt8, UInt8, UInt8)) -> RGBImage {
        let w = image.width, h = image.height
        if w == h { return image }
        let s = max(w, h)
        let left = (s - w) / 2, top = (s - h) / 2
        var out = [UInt8](repeating: 0, count: s * s * 3)
        out.withUnsafeMutableBufferPointer { d in
            for i in 0..<(s * s) {
                d[i * 3] = background.0
                d[i * 3 + 1] = background.1
                d[i * 3 + 2] = background.2
            }
            image.pixels.withUnsafeBufferPointer { src in
                for y in 0..<h {
                    let dst = UnsafeMutableRawPointer(d.baseAddress! + ((y + top) * s + left) * 3)
                    dst.copyMemory(from: src.baseAddress! + y * w * 3, byteCount: w * 3)
                }
            }
        }
        return RGBImage(width: s, height: s, pixels: out)
    }

    /// transformers' `center_crop`, including its zero padding when the image is smaller.
    public static func centerCrop(_ image: RGBImage, height ch: Int, width cw: Int) -> RGBImage {
        let h = image.height, w = image.width
        func floorDiv2(_ v: Int) -> Int { v >= 0 ? v / 2 : -((-v + 1) / 2) }
        func ceilDiv2(_ v: Int) -> Int { (v + 1) / 2 }  // v >= 0
        var top = floorDiv2(h - ch), left = floorDiv2(w - cw)
        if top >= 0 && top + ch <= h && left >= 0 && left + cw <= w {
            if top == 0 && left == 0 && ch == h && cw == w { return image }
        } else {
            let newH = max(ch, h), newW = max(cw, w)
            // Offsets of the image inside the zero-padded canvas, then crop start on the canvas;
            // expressed relative to the image: row y of the crop reads image row (y + top).
            let topPad = ceilDiv2(newH - h), leftPad = ceilDiv2(newW - w)
            top = max(0, top + topPad) - topPad
            left = max(0, left + leftPad) - leftPad
        }
        var out = [UInt8](repeating: 0, count: ch * cw * 3)
        out.withUnsafeMutableBufferPointer { d in
            image.pixels.withUnsafeBufferPointer { s in
                for y in 0..<ch {
                    let sy = y + top
                    guard sy >= 0 && sy < h else { continue }
                    for x in 0..<cw {
                        let sx = x + left
                        guard sx >= 0 && sx < w else { continue }
                        let di = (y * cw + x) * 3, si = (sy * w + sx) * 3
                        d[di] = s[si]; d[di + 1] = s[si + 1]; d[di + 2] = s[si + 2]
                    }
                }
            }
        }
        return RGBImage(width: cw, height: ch, pixels: out)
    }
}
