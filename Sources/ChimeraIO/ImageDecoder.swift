// Image decoding (PNG via libpng, JPEG via libjpeg-turbo) into 8-bit RGB.
import CImageCodecs
import Foundation

/// An 8-bit RGB image, interleaved (`r, g, b, r, g, b, ...`), row-major, no padding.
///
/// `pixels` always holds the colour channels exactly as decoded, i.e. what
/// PIL's `Image.convert("RGB")` gives (alpha simply dropped, grey replicated).
/// When the file carried transparency (alpha channel or PNG `tRNS`), the
/// alpha samples are kept in `alpha` so callers can reproduce transformers'
/// `convert_to_rgb`, which composites onto white (see `compositedOnWhite()`).
public struct RGBImage: Sendable, Equatable {
    public let width: Int
    public let height: Int
    public var pixels: [UInt8]
    /// One 8-bit alpha sample per pixel (non-premultiplied), or nil when the source was opaque.
    public var alpha: [UInt8]?

    public init(width: Int, height: Int, pixels: [UInt8], alpha: [UInt8]? = nil) {
        precondition(width > 0 && height > 0, "RGBImage needs a positive size, got \(width)x\(height)")
        precondition(pixels.count == width * height * 3,
                     "RGBImage \(width)x\(height) needs \(width * height * 3) bytes, got \(pixels.count)")
        precondition(alpha == nil || alpha!.count == width * height, "alpha must have one sample per pixel")
        self.width = width
        self.height = height
        self.pixels = pixels
        self.alpha = alpha
    }

    /// True when the image carries transparency information.
    public var hasAlpha: Bool { alpha != nil }

    /// The RGB value at (x, y).
    public subscript(x: Int, y: Int) -> (UInt8, UInt8, UInt8) {
        let i = (y * width + x) * 3
        return (pixels[i], pixels[i + 1], pixels[i + 2])
    }

    /// The image as an EXIF orientation (1–8) says to show it, as Pillow's `ImageOps.exif_transpose`
    /// turns it: 2 mirrored, 3 turned 180°, 4 flipped, 5 transposed, 6 turned 90° clockwise,
    /// 7 transversed, 8 turned 90° anticlockwise. Other values leave it as stored.
    public func oriented(_ orientation: Int) -> RGBImage {
        guard (2...8).contains(orientation) else { return self }
        let swaps = orientation >= 5
        let outWidth = swaps ? height : width, outHeight = swaps ? width : height
        // Where the output pixel (x, y) comes from in the stored image.
        func source(_ x: Int, _ y: Int) -> Int {
            let (sx, sy): (Int, Int)
            switch orientation {
            case 2: (sx, sy) = (width - 1 - x, y)
            case 3: (sx, sy) = (width - 1 - x, height - 1 - y)
            case 4: (sx, sy) = (x, height - 1 - y)
            case 5: (sx, sy) = (y, x)
            case 6: (sx, sy) = (y, height - 1 - x)
            case 7: (sx, sy) = (width - 1 - y, height - 1 - x)
            default: (sx, sy) = (width - 1 - y, x)
            }
            return sy * width + sx
        }
        var rgb = [UInt8](repeating: 0, count: pixels.count)
        var turnedAlpha = alpha.map { [UInt8](repeating: 0, count: $0.count) }
        for y in 0..<outHeight {
            for x in 0..<outWidth {
                let from = source(x, y), to = y * outWidth + x
                for c in 0..<3 { rgb[to * 3 + c] = pixels[from * 3 + c] }
                if let alpha { turnedAlpha![to] = alpha[from] }
            }
        }
        return RGBImage(width: outWidth, height: outHeight, pixels: rgb, alpha: turnedAlpha)
    }

    /// Composites the image over an opaque white background and drops alpha, bit-exactly as
    /// transformers' `convert_to_rgb` does for PIL images with transparency
    /// (`Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")`, using Pillow's
    /// integer AlphaComposite arithmetic). Returns `self` unchanged (minus `alpha`) when opaque.
    public func compositedOnWhite() -> RGBImage {
        guard let alpha else { return self }
        var out = pixels
        out.withUnsafeMutableBufferPointer { dst in
            alpha.withUnsafeBufferPointer { a in
                for i in 0..<(width * height) {
                    let sa = UInt32(a[i])
                    for c in 0..<3 {
                        dst[i * 3 + c] = pillowCompositeOverWhite(UInt32(dst[i * 3 + c]), alpha: sa)
                    }
                }
            }
        }
        return RGBImage(width: width, height: height, pixels: out)
    }
}

/// Pillow AlphaComposite.c with dst = (255, 255, 255, 255), PRECISION_BITS = 7.
@inline(__always)
func pillowCompositeOverWhite(_ src: UInt32, alpha sa: UInt32) -> UInt8 {
    if sa == 0 { return 255 }
    let dstA: UInt32 = 255, dstC: UInt32 = 255
    let blend = dstA * (255 - sa)
    let outa255 = sa * 255 + blend
    let coef1 = sa * 255 * 255 * (1 << 7) / outa255
    let coef2 = 255 * (1 << 7) - coef1
    let tmp = src * coef1 + dstC * coef2 + (0x80 << 7)
    return UInt8(truncatingIfNeeded: ((((tmp >> 8) + tmp) >> 8)) >> 7)
}

/// Errors from decoding images. Every case names the file it is about.
public enum ImageError: LocalizedError, Equatable {
    /// The file could not be read at all (missing, permissions, a directory...).
    case unreadableFile(file: String, reason: String)
    /// The file is empty.
    case emptyFile(file: String)
    /// Neither PNG nor JPEG; `firstBytes` describes what the file starts with.
    case unknownFormat(file: String, firstBytes: String)
    /// libpng / libjpeg rejected the stream (truncated or corrupt).
    case corrupt(file: String, format: String, message: String)
    /// A well-formed image in a mode we do not handle (e.g. a 2-component JPEG) or too large.
    case unsupportedMode(file: String, format: String, message: String)
    /// A decoded image whose preprocessing (padding, resizing) would build an absurdly large image.
    case tooLargeToPreprocess(file: String, width: Int, height: Int, reason: String)

    public var errorDescription: String? {
        switch self {
        case let .unreadableFile(file, reason):
            return "Cannot read image file '\(file)': \(reason)"
        case let .emptyFile(file):
            return "Image file '\(file)' is empty"
        case let .unknownFormat(file, firstBytes):
            return "Image file '\(file)' is not a PNG, JPEG or WebP (it starts with \(firstBytes))"
        case let .corrupt(file, format, message):
            return "Image file '\(file)' is a truncated or corrupt \(format): \(message)"
        case let .unsupportedMode(file, format, message):
            return "Image file '\(file)' is an unsupported \(format): \(message)"
        case let .tooLargeToPreprocess(file, width, height, reason):
            return "Image file '\(file)' (\(width)x\(height)) cannot be preprocessed: \(reason)"
        }
    }

    /// The file the error is about.
    public var file: String {
        switch self {
        case let .unreadableFile(file, _), let .emptyFile(file), let .unknownFormat(file, _),
             let .corrupt(file, _, _), let .unsupportedMode(file, _, _), let .tooLargeToPreprocess(file, _, _, _):
            return file
        }
    }
}

/// Decodes PNG, JPEG and WebP files. The format is chosen from the magic bytes, never the extension.
///
/// - PNG (libpng): 1/2/4/8/16-bit grey, grey+alpha, RGB, RGBA, palette (with or without
///   `tRNS`), interlaced or not. 16-bit samples are reduced with `png_set_strip_16` (the high
///   byte is kept), which is what Pillow does for 16-bit RGB/RGBA; for 16-bit *grey* Pillow
///   instead opens an `I;16` image whose `convert("RGB")` clips at 255, so such files differ.
/// - JPEG (libjpeg-turbo, default islow IDCT and fancy upsampling, like Pillow): grey and
///   YCbCr/RGB, and CMYK/YCCK turned into RGB as Pillow's `convert("RGB")` does (samples read
///   Adobe-inverted, then each channel (255 − k) − c·(255 − k)/255).
/// - WebP (libwebp, default fancy upsampling, like Pillow): still images, lossy or lossless, with
///   or without alpha; an animation is refused (Pillow would show its first frame).
/// - The EXIF orientation (a JPEG's APP1, a PNG's eXIf chunk, a WebP's EXIF chunk) is applied, as transformers'
///   `load_image` does with `ImageOps.exif_transpose` (Pillow's `Image.open` alone does not):
///   a phone photo comes out as it is shown, not as its sensor stored it.
public enum ImageDecoder {
    public static func decode(contentsOf url: URL) throws -> RGBImage {
        let name = url.isFileURL ? url.path : url.absoluteString
        if url.isFileURL, let reason = notARegularFile(url.path) { throw ImageError.unreadableFile(file: name, reason: reason) }
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            let reason: String
            if !FileManager.default.fileExists(atPath: url.path) {
                reason = "no such file"
            } else {
                reason = (error as NSError).localizedDescription
            }
            throw ImageError.unreadableFile(file: name, reason: reason)
        }
        return try decode(data: data, name: name)
    }

    /// Decodes an in-memory PNG, JPEG or WebP; `name` is only used in error messages.
    public static func decode(data: Data, name: String) throws -> RGBImage {
        guard !data.isEmpty else { throw ImageError.emptyFile(file: name) }
        guard let format = ImageFormat(magic: data) else {
            throw ImageError.unknownFormat(file: name, firstBytes: describeMagic(data))
        }

        var image = cic_image()
        let status: Int32 = data.withUnsafeBytes { raw in
            let base = raw.bindMemory(to: UInt8.self).baseAddress!
            switch format {
            case .png: return cic_decode_png(base, raw.count, &image)
            case .jpeg: return cic_decode_jpeg(base, raw.count, &image)
            case .webp: return cic_decode_webp(base, raw.count, &image)
            }
        }
        defer { cic_image_free(&image) }
        guard status == Int32(CIC_OK.rawValue) else {
            let message = withUnsafeBytes(of: image.error) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if status == Int32(CIC_UNSUPPORTED.rawValue) || status == Int32(CIC_TOO_LARGE.rawValue) {
                throw ImageError.unsupportedMode(file: name, format: format.rawValue, message: message)
            }
            throw ImageError.corrupt(file: name, format: format.rawValue, message: message)
        }

        let decoded = rgbImage(image)
        return decoded.oriented(ExifOrientation.read(data, format: format) ?? 1)
    }

    /// The codec's pixels as an RGBImage (alpha split into its own plane).
    static func rgbImage(_ image: cic_image) -> RGBImage {
        let width = Int(image.width), height = Int(image.height), channels = Int(image.channels)
        let count = width * height
        let source = UnsafeBufferPointer(start: image.pixels, count: count * channels)
        if channels == 3 {
            return RGBImage(width: width, height: height, pixels: Array(source))
        }
        // RGBA: split into colour and alpha planes.
        var rgb = [UInt8](repeating: 0, count: count * 3)
        var alpha = [UInt8](repeating: 0, count: count)
        rgb.withUnsafeMutableBufferPointer { rgbOut in
            alpha.withUnsafeMutableBufferPointer { aOut in
                for i in 0..<count {
                    rgbOut[i * 3] = source[i * 4]
                    rgbOut[i * 3 + 1] = source[i * 4 + 1]
                    rgbOut[i * 3 + 2] = source[i * 4 + 2]
                    aOut[i] = source[i * 4 + 3]
                }
            }
        }
        return RGBImage(width: width, height: height, pixels: rgb, alpha: alpha)
    }

    /// "bytes 47 49 46 38 39 61 ("GIF89a"), which looks like a GIF image".
    static func describeMagic(_ data: Data) -> String {
        let head = Array(data.prefix(8))
        let hex = head.map { String(format: "%02X", $0) }.joined(separator: " ")
        let ascii = String(head.map { (0x20...0x7E).contains($0) ? Character(UnicodeScalar($0)) : "." })
        var text = "bytes \(hex) (\"\(ascii)\")"
        if data.count < 8 { text += ", only \(data.count) byte\(data.count == 1 ? "" : "s") long" }
        let guess: String?
        if data.starts(with: Array("GIF8".utf8)) { guess = "a GIF image" }
        else if data.starts(with: Array("BM".utf8)) { guess = "a BMP image" }
        else if data.starts(with: [0x49, 0x49, 0x2A, 0x00]) || data.starts(with: [0x4D, 0x4D, 0x00, 0x2A]) { guess = "a TIFF image" }
        else if data.count >= 12 && Array(data[data.startIndex + 4 ..< data.startIndex + 8]) == Array("ftyp".utf8) { guess = "a HEIF/AVIF/MP4 container" }
        else if data.starts(with: Array("<".utf8)) || data.starts(with: Array("{".utf8)) { guess = "text (HTML/XML/JSON), not an image" }
        else { guess = nil }
        if let guess { text += ", which looks like \(guess)" }
        return text
    }
}

/// The formats ImageDecoder reads, known by their first bytes.
enum ImageFormat: String {
    case png = "PNG", jpeg = "JPEG", webp = "WebP"

    init?(magic data: Data) {
        let head = [UInt8](data.prefix(12))
        if head.starts(with: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) {
            self = .png
        } else if head.starts(with: [0xFF, 0xD8, 0xFF]) {
            self = .jpeg
        } else if head.count == 12, head.starts(with: Array("RIFF".utf8)), Array(head[8...]) == Array("WEBP".utf8) {
            self = .webp
        } else {
            return nil
        }
    }
}

/// The orientation Pillow's `getexif` finds for an image (what `ImageOps.exif_transpose` applies):
/// the tag 0x0112 of the EXIF data's first IFD — in a JPEG, every APP1 "Exif" segment joined as
/// Pillow joins them; in a PNG, the last eXIf chunk — or, when the EXIF has no such tag, a
/// `tiff:Orientation` in the XMP packet (a JPEG's last XMP APP1, a PNG's uncompressed iTXt
/// "XML:com.adobe.xmp"); in a WebP, its first EXIF and "XMP " chunks. Not read: compressed PNG text chunks (a zTXt "Raw profile type exif",
/// a compressed XMP iTXt) and BigTIFF-style EXIF.
enum ExifOrientation {
    static func read(_ data: Data, format: ImageFormat) -> Int? {
        let bytes = [UInt8](data)
        let (exif, xmp) = switch format {
        case .png: pngMetadata(bytes)
        case .jpeg: jpegMetadata(bytes)
        case .webp: webpMetadata(bytes)
        }
        if let exif, let tag = orientation(inExif: exif) { return tag }
        return xmp.flatMap(orientation(inXMP:))
    }

    static let exifPrefix: [UInt8] = Array("Exif".utf8) + [0, 0]
    static let xmpPrefix: [UInt8] = Array("http://ns.adobe.com/xap/1.0/".utf8) + [0]

    /// The APP1 segments before the scan: the EXIF ones joined (the first whole, the others without
    /// their prefix), and the last XMP one's packet.
    static func jpegMetadata(_ b: [UInt8]) -> (exif: [UInt8]?, xmp: [UInt8]?) {
        var exif: [UInt8]?, xmp: [UInt8]?
        var i = 2
        while i + 4 <= b.count {
            guard b[i] == 0xFF else { i += 1; continue }  // junk between segments, skipped as Pillow does
            let marker = b[i + 1]
            if marker == 0xFF { i += 1; continue }  // fill byte
            if marker == 0xD8 || (0xD0...0xD7).contains(marker) || marker == 0x01 { i += 2; continue }
            if marker == 0xDA || marker == 0xD9 { break }  // the scan starts: no more headers
            let length = Int(b[i + 2]) << 8 | Int(b[i + 3])
            guard length >= 2, i + 2 + length <= b.count else { break }
            let body = Array(b[(i + 4)..<(i + 2 + length)])
            if marker == 0xE1, body.starts(with: exifPrefix) { exif = exif.map { $0 + body.dropFirst(6) } ?? body }
            if marker == 0xE1, body.starts(with: xmpPrefix) { xmp = Array(body.dropFirst(xmpPrefix.count)) }
            i += 2 + length
        }
        return (exif, xmp)
    }

    /// The last eXIf chunk (with the JPEG-style prefix Pillow puts in front) and an uncompressed
    /// XMP iTXt chunk's text.
    static func pngMetadata(_ b: [UInt8]) -> (exif: [UInt8]?, xmp: [UInt8]?) {
        var exif: [UInt8]?, xmp: [UInt8]?
        var i = 8
        while i + 12 <= b.count {
            let length = Int(b[i]) << 24 | Int(b[i + 1]) << 16 | Int(b[i + 2]) << 8 | Int(b[i + 3])
            guard i + 12 + length <= b.count else { break }
            let type = Array(b[(i + 4)..<(i + 8)]), body = Array(b[(i + 8)..<(i + 8 + length)])
            if type == Array("eXIf".utf8) { exif = exifPrefix + body }
            if type == Array("iTXt".utf8), let text = uncompressedXMP(body) { xmp = text }
            if type == Array("IEND".utf8) { break }
            i += 12 + length
        }
        return (exif, xmp)
    }

    /// The first EXIF and "XMP " chunks of a WebP's RIFF container, as libwebp's demuxer (which
    /// Pillow asks for them) finds them: only in the extended format, whose first chunk is VP8X.
    static func webpMetadata(_ b: [UInt8]) -> (exif: [UInt8]?, xmp: [UInt8]?) {
        var exif: [UInt8]?, xmp: [UInt8]?
        guard b.count >= 16, Array(b[12..<16]) == Array("VP8X".utf8) else { return (nil, nil) }
        var i = 12
        while i + 8 <= b.count {
            let length = Int(b[i + 4]) | Int(b[i + 5]) << 8 | Int(b[i + 6]) << 16 | Int(b[i + 7]) << 24
            guard i + 8 + length <= b.count else { break }
            let type = Array(b[i..<(i + 4)]), body = Array(b[(i + 8)..<(i + 8 + length)])
            if type == Array("EXIF".utf8), exif == nil { exif = body }
            if type == Array("XMP ".utf8), xmp == nil { xmp = body }
            i += 8 + length + (length & 1)  // chunks are padded to an even size
        }
        return (exif, xmp)
    }

    /// An iTXt chunk's text when its keyword is "XML:com.adobe.xmp" and it is not compressed.
    static func uncompressedXMP(_ body: [UInt8]) -> [UInt8]? {
        let keyword = Array("XML:com.adobe.xmp".utf8) + [0]
        guard body.starts(with: keyword), body.count >= keyword.count + 2, body[keyword.count] == 0 else { return nil }
        // Flag, method, then language and translated keyword, each ended by a 0.
        var rest = body[(keyword.count + 2)...]
        for _ in 0..<2 {
            guard let end = rest.firstIndex(of: 0) else { return nil }
            rest = rest[(end + 1)...]
        }
        return Array(rest)
    }

    /// IFD0's orientation as Pillow reads it: nil when the tag is absent; its first value when it
    /// is a number equal to a whole orientation, else 1 (present, but nothing to apply).
    static func orientation(inExif exif: [UInt8]) -> Int? {
        var t = exif[...]
        for _ in 0..<2 where t.starts(with: exifPrefix) { t = t.dropFirst(6) }
        let d = Array(t)
        guard d.count >= 8 else { return nil }
        let little: Bool
        switch (d[0], d[1], d[2], d[3]) {
        case (0x49, 0x49, 0x2A, 0), (0x49, 0x49, 0, 0x2A): little = true   // the second: a swapped magic Pillow accepts
        case (0x4D, 0x4D, 0, 0x2A), (0x4D, 0x4D, 0x2A, 0): little = false
        default: return nil
        }
        func uint(_ at: Int, _ width: Int) -> UInt64? {
            guard at >= 0, width <= 8, at + width <= d.count else { return nil }
            var v: UInt64 = 0
            for k in 0..<width { v |= UInt64(d[at + k]) << (8 * UInt64(little ? k : width - 1 - k)) }
            return v
        }
        guard let ifd = uint(4, 4).map(Int.init), let count = uint(ifd, 2).map(Int.init) else { return nil }
        // Bytes a value of each type Pillow reads takes.
        let unit: [Int: Int] = [1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8]
        var outOfLine = 0
        for entry in 0..<count {
            let at = ifd + 2 + 12 * entry
            guard let tag = uint(at, 2), let type = uint(at + 2, 2).map(Int.init), let n = uint(at + 4, 4).map(Int.init) else { return nil }
            guard let size = unit[type].map({ $0 * n }) else { continue }  // a type Pillow skips
            var valueAt = at + 8
            if size > 4 {
                // Out-of-line data: skipped when all of it so far would not fit in the EXIF block.
                outOfLine += size
                guard outOfLine <= d.count, let offset = uint(at + 8, 4).map(Int.init), offset + size <= d.count else { continue }
                valueAt = offset
            }
            guard tag == 0x0112, size > 0 else { continue }
            return number(at: valueAt, type: type, uint).flatMap { $0 == $0.rounded() && (1...8).contains($0) ? Int($0) : nil } ?? 1
        }
        return nil
    }

    /// The first value of a numeric EXIF type (nil for bytes, text and undefined, which Pillow
    /// keeps as bytes or text, never an orientation).
    static func number(at: Int, type: Int, _ uint: (Int, Int) -> UInt64?) -> Double? {
        func signed(_ width: Int) -> Double? {
            uint(at, width).map { Double(Int64(bitPattern: $0 << (64 - 8 * UInt64(width))) >> (64 - 8 * Int64(width))) }
        }
        switch type {
        case 3, 4, 13, 16, 18: return uint(at, [3: 2, 4: 4, 13: 4, 16: 8, 18: 8][type]!).map { Double($0) }  // (not Double.init: that takes the bit pattern)
        case 6, 8, 9, 17: return signed([6: 1, 8: 2, 9: 4, 17: 8][type]!)
        case 5: guard let n = uint(at, 4), let q = uint(at + 4, 4), q != 0 else { return nil }; return Double(n) / Double(q)
        case 10:
            guard let n = uint(at, 4), let q = uint(at + 4, 4), q != 0 else { return nil }
            return Double(Int32(bitPattern: UInt32(n))) / Double(Int32(bitPattern: UInt32(q)))
        case 11: return uint(at, 4).map { Double(Float(bitPattern: UInt32($0))) }
        case 12: return uint(at, 8).map { Double(bitPattern: $0) }
        default: return nil
        }
    }

    /// Pillow's `re.search(rb'tiff:Orientation(="|>)([0-9])', xmp)`.
    static func orientation(inXMP xmp: [UInt8]) -> Int? {
        let key = Array("tiff:Orientation".utf8)
        var i = 0
        while i + key.count + 2 <= xmp.count {
            if xmp[i] == key[0], Array(xmp[i..<(i + key.count)]) == key {
                let j = i + key.count
                if xmp[j] == UInt8(ascii: ">"), (48...57).contains(xmp[j + 1]) { return Int(xmp[j + 1] - 48) }
                if j + 2 < xmp.count, xmp[j] == UInt8(ascii: "="), xmp[j + 1] == UInt8(ascii: "\""), (48...57).contains(xmp[j + 2]) {
                    return Int(xmp[j + 2] - 48)
                }
            }
            i += 1
        }
        return nil
    }
}
