import Chimera
import ChimeraTensor
import Foundation

/// A PyTorch nn.Linear: weight [out, in] in any WeightFormat, optional float32 bias [out].
struct LinearLayer: Sendable {
    let matrix: WeightMatrix
    let bias: Tensor?

    init(weight: Tensor, bias: Tensor?) { matrix = WeightMatrix(weight); self.bias = bias }
    init(matrix: WeightMatrix, bias: Tensor?) { self.matrix = matrix; self.bias = bias }

    init(_ loader: ParameterLoader, _ name: String, input: Int, output: Int, bias hasBias: Bool) throws {
        // An unnamed layer is a bare nn.Linear saved as "weight"/"bias" (TinyLLaVA's linear connector).
        let dot = name.isEmpty ? "" : name + "."
        matrix = try loader.matrix(dot + "weight", shape: [output, input])
        bias = hasBias ? try loader.tensor(dot + "bias", shape: [output]) : nil
    }

    /// Initialized as nn.Linear does (uniform ±1/√in for weight and bias), from a seeded generator.
    init(seededInput input: Int, output: Int, generator: inout SplitMix64) {
        let bound = 1 / Float(input).squareRoot()
        matrix = WeightMatrix(Tensor(shape: [output, input], values: (0..<(output * input)).map { _ in generator.uniform(bound) }))
        bias = Tensor(shape: [output], values: (0..<output).map { _ in generator.uniform(bound) })
    }

    /// The weight as float32 (the stored tensor, or a widened copy of another format).
    var weight: Tensor { matrix.widened() }

    /// Every matrix product of a family goes through these two calls, so that weight formats
    /// (f16, bf16, quantized) change in WeightMatrix without touching the families.
    func callAsFunction(_ x: Tensor) -> Tensor {
        let out = Tensor(zeros: Array(x.shape.dropLast()) + [matrix.rows])
        matrix.apply(x, bias: bias, into: out)
        return out
    }
    func callAsFunction(_ x: Tensor, into out: Tensor) { matrix.apply(x, bias: bias, into: out) }
    /// Two or three layers over the same input in one product (see WeightMatrix.apply(_:_:_:_:)).
    static func apply(_ x: Tensor, _ a: (LinearLayer, Tensor), _ b: (LinearLayer, Tensor), _ c: (LinearLayer, Tensor)? = nil) {
        WeightMatrix.apply(x, (a.0.matrix, a.0.bias, a.1), (b.0.matrix, b.0.bias, b.1), c.map { ($0.0.matrix, $0.0.bias, $0.1) })
    }
    var inputWidth: Int { matrix.columns }
    var outputWidth: Int { matrix.rows }
    /// Outputs `range` only: the matrix's rows and the bias's elements, in place (no copy).
    func outputs(_ range: Range<Int>) -> LinearLayer {
        LinearLayer(matrix: matrix.rows(range), bias: bias?.elements(range))
    }
}

/// A LayerNorm with weight and optional bias.
struct LayerNormLayer: Sendable {
    let weight: Tensor
    let bias: Tensor?
    let eps: Float

    init(_ loader: ParameterLoader, _ name: String, width: Int, eps: Float, bias hasBias: Bool = true) throws {
        weight = try loader.tensor(name + ".weight", shape: [width])
        bias = hasBias ? try loader.tensor(name + ".bias", shape: [width]) : nil
        self.eps = eps
    }

    func callAsFunction(_ x: Tensor) -> Tensor { layerNorm(x, weight: weight, bias: bias, eps: eps) }
    /// What `residualLayerNorm` takes to normalize with this layer.
    var parameters: (weight: Tensor, bias: Tensor?, eps: Float) { (weight, bias, eps) }
}

/// Weight errors of a family name the manifest they belong to.
func withManifestContext<T>(_ manifest: ComponentManifest, _ body: () throws -> T) throws -> T {
    do { return try body() } catch let error as LocalizedError {
        throw FamilyError.badWeights(manifest: manifest.originFile, reason: error.errorDescription ?? "\(error)")
    }
}

/// Family configs refuse unknown fields, like the manifests around them.
func rejectUnknown<K: CodingKey & CaseIterable>(_ decoder: Decoder, _ keys: K.Type) throws {
    try decoder.rejectUnknownKeys(keys)
}

/// The same for a config whose fields are declared by two key sets (shared and family-specific).
func rejectUnknown<A: CodingKey & CaseIterable, B: CodingKey & CaseIterable>(_ decoder: Decoder, _ a: A.Type, _ b: B.Type) throws {
    let known = Set(A.allCases.map(\.stringValue) + B.allCases.map(\.stringValue))
    let container = try decoder.container(keyedBy: NamedKey.self)
    for key in container.allKeys where !known.contains(key.stringValue) {
        throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath + [key],
            debugDescription: "unknown field '\(key.stringValue)' (known: \(known.sorted().joined(separator: ", ")))"))
    }
}

private struct NamedKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

/// A config check that fails as a decoding error at `key` (reported as "config.<key>: ...").
func require<K: CodingKey>(_ condition: Bool, _ key: K, _ message: String) throws {
    if !condition { throw DecodingError.dataCorrupted(.init(codingPath: [key], debugDescription: message)) }
}

/// A size field: positive, and at most `most` (far above any small model's, see SizeLimits), so
/// that products of sizes cannot overflow.
func requireSize<K: CodingKey>(_ value: Int, _ key: K, most: Int) throws {
    try require(value > 0, key, "must be positive, found \(value)")
    try require(value <= most, key, "must be at most \(most), found \(value)")
}

/// Cuts `planes` planes of `height` rows × `width` floats into blocks of `blockHeight` × `blockWidth`
/// (a remainder is dropped, as by a stride-block convolution) and lays each block out as one row
/// (plane, block row, block column), blocks in row-major order. A ViT's patches are the blocks of the
/// [C, S, S] pixels; pixel shuffle's are the f × (f·V) blocks of the [side, side·V] token grid.
func gatherBlocks(_ source: UnsafePointer<Float>, planes: Int, height: Int, width: Int,
                  blockHeight: Int, blockWidth: Int) -> Tensor {
    let rows = height / blockHeight, columns = width / blockWidth
    let rowWidth = planes * blockHeight * blockWidth
    let out = Tensor(zeros: [rows * columns, rowWidth])
    for by in 0..<rows {
        for bx in 0..<columns {
            let row = out.data + (by * columns + bx) * rowWidth
            for plane in 0..<planes {
                for y in 0..<blockHeight {
                    let src = source + plane * height * width + (by * blockHeight + y) * width + bx * blockWidth
                    (row + (plane * blockHeight + y) * blockWidth).update(from: src, count: blockWidth)
                }
            }
        }
    }
    return out
}
