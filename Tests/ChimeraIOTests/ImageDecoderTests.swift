import Foundation
import Testing
@testable import ChimeraIO

@Suite("Image decoding")
struct ImageDecoderTests {
    /// Every fixture image decodes to exactly the pixels PIL's `convert("RGB")` gives (tolerance 0,
    /// JPEGs included: system libjpeg-turbo 2.1 and Pillow's bundled 3.x agree on these files),
    /// and the alpha plane / white composite match PIL's `convert("RGBA")` / `alpha_composite`.
    @Test func decodedPixelsMatchPIL() throws {
        for entry in try ImageFixtures.index().decoded {
            let image = try ImageDecoder.decode(contentsOf: ImageFixtures.url(entry.image))
            #expect(image.width == entry.width, "\(entry.image)")
            #expect(image.height == entry.height, "\(entry.image)")
            let expected = try ImageFixtures.bytes(entry.rgb)
            let maxDiff = zip(image.pixels, expected).map { abs(Int($0) - Int($1)) }.max() ?? 0
            #expect(image.pixels.count == expected.count && maxDiff == 0,
                    "\(entry.image) (\(entry.mode)): max uint8 difference \(maxDiff)")
            if let alphaName = entry.alpha {
                #expect(image.alpha == (try ImageFixtures.bytes(alphaName)), "\(entry.image) alpha")
                let white = try ImageFixtures.bytes(entry.composited!)
                #expect(image.compositedOnWhite().pixels == white, "\(entry.image) composite on white")
                #expect(image.compositedOnWhite().alpha == nil)
            } else {
                #expect(image.alpha == nil, "\(entry.image) should be opaque")
            }
        }
    }

    /// Images come out as transformers' `load_image` returns them (`ImageOps.exif_transpose`, then
    /// `convert("RGB")`): EXIF orientations 1–8 in JPEG, big-endian EXIF, a PNG eXIf chunk, an
    /// out-of-range value left alone, a CMYK JPEG, and WebPs (lossy, lossless, with alpha, oriented
    /// by EXIF or XMP chunks), with their alpha planes (Scripts/make_load_image_fixtures.py).
    @Test func imagesDecodeAsLoadImageReturnsThem() throws {
        struct Case: Decodable { let image: String; let width: Int; let height: Int; let alpha: Bool? }
        let cases = try JSONDecoder().decode([Case].self, from: Data(try ImageFixtures.bytes("load_image/cases.json")))
        #expect(cases.count == 30)
        for entry in cases {
            let image = try ImageDecoder.decode(contentsOf: ImageFixtures.url("load_image/" + entry.image))
            #expect(image.width == entry.width && image.height == entry.height, "\(entry.image): \(image.width)x\(image.height)")
            #expect(image.pixels == (try ImageFixtures.bytes("load_image/\(entry.image).rgb.u8")), "\(entry.image)")
            if entry.alpha == true {
                #expect(image.alpha == (try ImageFixtures.bytes("load_image/\(entry.image).alpha.u8")), "\(entry.image) alpha")
            }
        }
        // The alpha plane turns with the colours.
        let rgba = RGBImage(width: 2, height: 1, pixels: [1, 2, 3, 4, 5, 6], alpha: [7, 8])
        let turned = rgba.oriented(6)
        #expect(turned.width == 1 && turned.height == 2 && turned.pixels == [1, 2, 3, 4, 5, 6] && turned.alpha == [7, 8])
        #expect(rgba.oriented(8).pixels == [4, 5, 6, 1, 2, 3] && rgba.oriented(8).alpha == [8, 7])
    }

    /// An animated WebP (Pillow would show its first frame) and a truncated one are refused by name.
    @Test func webpThatCannotBeReadIsRefused() throws {
        for (file, expected) in [("animated.webp", "animated WebP is not supported"), ("truncated.webp", "is a truncated or corrupt WebP")] {
            let url = ImageFixtures.url("load_image/" + file)
            do {
                _ = try ImageDecoder.decode(contentsOf: url)
                Issue.record("\(file) decoded")
            } catch let error as ImageError {
                #expect(error.errorDescription!.contains(url.path) && error.errorDescription!.contains(expected), "\(error.errorDescription!)")
            }
        }
    }

    @Test func sixteenBitGreyKeepsHighByte() throws {
        let image = try ImageDecoder.decode(contentsOf: ImageFixtures.url("grey16_8x4.png"))
        #expect(image.width == 8 && image.height == 4)
        #expect(image.pixels == (try ImageFixtures.bytes("grey16_8x4.png.expected.u8")))
    }

    @Test func decodeFromDataMatchesFile() throws {
        let url = ImageFixtures.url("photo_64x40.jpg")
        let a = try ImageDecoder.decode(contentsOf: url)
        let b = try ImageDecoder.decode(data: Data(contentsOf: url), name: "in-memory.jpg")
        #expect(a == b)
    }

    private func decodeError(_ name: String) -> ImageError? {
        do {
            _ = try ImageDecoder.decode(contentsOf: ImageFixtures.url(name))
            return nil
        } catch let error as ImageError {
            return error
        } catch {
            Issue.record("unexpected error type \(type(of: error)): \(error)")
            return nil
        }
    }

    @Test func truncatedPNG() throws {
        let error = try #require(decodeError("err_truncated.png"))
        guard case let .corrupt(file, format, message) = error else { Issue.record("got \(error)"); return }
        #expect(file.hasSuffix("err_truncated.png") && format == "PNG")
        #expect(message.contains("truncated"))
        #expect(error.localizedDescription.contains("err_truncated.png"))
    }

    @Test func badCRCPNG() throws {
        let error = try #require(decodeError("err_crc.png"))
        guard case let .corrupt(_, format, message) = error else { Issue.record("got \(error)"); return }
        #expect(format == "PNG" && message.lowercased().contains("crc"))
    }

    @Test func garbageBytes() throws {
        let error = try #require(decodeError("err_garbage.png"))
        guard case let .unknownFormat(file, firstBytes) = error else { Issue.record("got \(error)"); return }
        #expect(file.hasSuffix("err_garbage.png"))
        #expect(firstBytes.contains("07 08 09 0A 0B 0C 0D 0E"))
        #expect(error.localizedDescription.contains("err_garbage.png"))
    }

    @Test func gifIsNamed() throws {
        let error = try #require(decodeError("err_gif.png"))
        #expect(error.localizedDescription.contains("GIF"))
    }

    @Test func emptyFile() throws {
        let error = try #require(decodeError("err_empty.png"))
        #expect(error == .emptyFile(file: ImageFixtures.url("err_empty.png").path))
        #expect(error.localizedDescription.contains("err_empty.png"))
    }

    @Test func missingFile() throws {
        let error = try #require(decodeError("does_not_exist.png"))
        guard case let .unreadableFile(file, reason) = error else { Issue.record("got \(error)"); return }
        #expect(file.hasSuffix("does_not_exist.png") && reason == "no such file")
    }

    @Test func directoryIsUnreadable() throws {
        do {
            _ = try ImageDecoder.decode(contentsOf: ImageFixtures.directory)
            Issue.record("decoding a directory should fail")
        } catch let error as ImageError {
            #expect(error.file == ImageFixtures.directory.path)
        }
    }

    @Test func truncatedJPEG() throws {
        let error = try #require(decodeError("err_truncated.jpg"))
        guard case let .corrupt(file, format, message) = error else { Issue.record("got \(error)"); return }
        #expect(file.hasSuffix("err_truncated.jpg") && format == "JPEG" && message.contains("truncated"))
    }

    /// A header may claim any size: one over PIL's decompression-bomb bound is refused before a
    /// pixel is allocated (a 2 KB JPEG said 16384 x 16384 and took 1.6 GB).
    @Test func headerClaimingTooManyPixelsIsRefused() throws {
        var bytes = [UInt8](try Data(contentsOf: ImageFixtures.url("grey_30x44.jpg")))
        let sof = try #require((0..<bytes.count - 9).first { bytes[$0] == 0xFF && (bytes[$0 + 1] == 0xC0 || bytes[$0 + 1] == 0xC2) })
        for (offset, value) in [(5, 9500), (7, 9500)] {  // height, width: 90,250,000 pixels
            bytes[sof + offset] = UInt8(value >> 8); bytes[sof + offset + 1] = UInt8(value & 0xFF)
        }
        do {
            _ = try ImageDecoder.decode(data: Data(bytes), name: "bomb.jpg")
            Issue.record("a 9500 x 9500 header was decoded")
        } catch let error as ImageError {
            #expect(error.localizedDescription.contains("image dimensions 9500x9500 (90250000 pixels) exceed the limit of 89478485 pixels"),
                    "\(error.localizedDescription)")
        }
    }

    /// No bound a side, as in Pillow: a 70000 x 1 PNG (70,000 pixels) decodes; it was refused as
    /// "Invalid IHDR data" past 65,535 a side.
    @Test func aLongStripDecodes() throws {
        let image = try ImageDecoder.decode(contentsOf: ImageFixtures.url("load_image/wide_70000x1.png"))
        #expect(image.width == 70000 && image.height == 1)
        let expected: [UInt8] = (0..<70000).flatMap { x -> [UInt8] in let v = UInt8(x % 251); return [v, v, v] }
        #expect(image.pixels == expected)
    }

    /// Corrupt scan data that libjpeg only warns about, filling the last rows, fails when the file
    /// is read on to its end, as Pillow's "broken data stream" does — not a picture of junk.
    @Test func corruptScanDataIsAnError() throws {
        var bytes = [UInt8](try Data(contentsOf: ImageFixtures.url("photo_64x40.jpg")))
        let sos = try #require((0..<bytes.count - 1).first { bytes[$0] == 0xFF && bytes[$0 + 1] == 0xDA })
        let at = sos + (bytes.count - sos) * 3 / 4
        bytes.replaceSubrange(at..<at + 4, with: [0xFF, 0xFF, 0xFF, 0xFF])
        do {
            _ = try ImageDecoder.decode(data: Data(bytes), name: "broken.jpg")
            Issue.record("a JPEG with corrupt scan data was decoded")
        } catch let error as ImageError {
            #expect(error.localizedDescription.contains("corrupt JPEG data after the last row"), "\(error.localizedDescription)")
        }
    }

    @Test func corruptJPEGHeader() throws {
        let error = try #require(decodeError("err_corrupt.jpg"))
        guard case let .corrupt(_, format, message) = error else { Issue.record("got \(error)"); return }
        #expect(format == "JPEG" && message.contains("precision"))
        #expect(error.localizedDescription.contains("err_corrupt.jpg"))
    }

    /// Every prefix of a PNG and a JPEG either decodes or throws; none may crash or hang.
    @Test func everyPrefixFailsCleanly() throws {
        for name in ["rgb_61x45.png", "progressive_48x36.jpg"] {
            let full = try Data(contentsOf: ImageFixtures.url(name))
            var failures = 0
            for length in stride(from: 1, to: full.count, by: 7) {
                do { _ = try ImageDecoder.decode(data: full.prefix(length), name: name) } catch { failures += 1 }
            }
            #expect(failures > 0)
        }
    }

    /// Random byte flips must never crash (results may decode or throw).
    @Test func bitFlipsDoNotCrash() throws {
        var rng = ImageTestRNG(seed: 42)
        for name in ["rgb_61x45.png", "photo_64x40.jpg", "palette_trns_29x19.png"] {
            let full = [UInt8](try Data(contentsOf: ImageFixtures.url(name)))
            for _ in 0..<200 {
                var copy = full
                for _ in 0..<3 { copy[Int(rng.next() % UInt64(copy.count - 8)) + 8] = UInt8(truncatingIfNeeded: rng.next()) }
                _ = try? ImageDecoder.decode(data: Data(copy), name: name)
            }
        }
    }
}

struct ImageTestRNG {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E3779B97F4A7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) &* 0x94D049BB133111EB
        return z ^ (z >> 31)
    }
}
