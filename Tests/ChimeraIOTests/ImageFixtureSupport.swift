import ChimeraTensor
import Foundation
@testable import ChimeraIO

/// Fixtures written by Scripts/make_image_fixtures.py.
enum ImageFixtures {
    static let directory: URL = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!
        .appendingPathComponent("images")

    static func url(_ name: String) -> URL { directory.appendingPathComponent(name) }

    static func bytes(_ name: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: url(name))) }

    static func floats(_ name: String) throws -> [Float] {
        let data = try Data(contentsOf: url(name))
        return data.withUnsafeBytes { raw in
            (0..<(raw.count / 4)).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
        }
    }

    struct Decoded: Decodable {
        let image: String
        let width: Int
        let height: Int
        let mode: String
        let rgb: String
        let alpha: String?
        let composited: String?
    }

    struct Case: Decodable {
        let name: String
        let image: String
        let preprocess: ImagePreprocessing
        let composite_alpha: Bool
        let shape: [Int]
        let values: String
        let hf_config: String?
    }

    struct Procedural: Decodable {
        let name: String
        let width: Int
        let height: Int
        let preprocess: ImagePreprocessing
        let prepared_shape: [Int]
        let prepared: String?
        let prepared_sum: Int?
        let prepared_weighted_sum: Int?
    }

    struct GridEntry: Decodable {
        let width: Int
        let height: Int
        let out_width: Int
        let out_height: Int
        let vertical_first: Bool
        let offset: Int
    }

    struct Index: Decodable {
        let decoded: [Decoded]
        let cases: [Case]
        let procedural: [Procedural]
        let resize_grid: [GridEntry]
    }

    static func index() throws -> Index {
        try JSONDecoder().decode(Index.self, from: Data(contentsOf: url("cases.json")))
    }

    /// Same formula as `procedural()` in make_image_fixtures.py.
    static func proceduralImage(width w: Int, height h: Int) -> RGBImage {
        var px = [UInt8](repeating: 0, count: w * h * 3)
        for y in 0..<h {
            for x in 0..<w {
                let i = (y * w + x) * 3
                px[i] = UInt8((x * 7 + y * 3) % 256)
                px[i + 1] = UInt8(((x * y) / 5) % 256)
                px[i + 2] = ((x / 16) + (y / 16)) % 2 == 0 ? 235 : 20
            }
        }
        return RGBImage(width: w, height: h, pixels: px)
    }
}
