import Chimera
import ChimeraTensor
import Foundation

/// MobileVLM V2's LDPNetV2Projector (mobilevlm/model/vision_projector.py): an MLP (Linear V→H,
/// GELU, Linear H→H), 2-D adaptive average pooling of the square token grid to `grid` (MobileVLM:
/// 24×24 → 12×12, i.e. 576 → 144 tokens), then a depthwise 3×3 convolution with bias as positional
/// encoding (PEG), added to its input. Weight names as MobileVLM saves them (prefix "model.mm_projector."):
/// `mlp.mlp.{0,2}`, `peg.peg.0`.
public struct LDPv2Config: Codable, Sendable, ConnectorTokenMapping {
    /// Output grid [rows, columns].
    public var grid: [Int] = [12, 12]

    enum CodingKeys: String, CodingKey, CaseIterable { case grid }

    public init(from decoder: Decoder) throws {
        try rejectUnknown(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        grid = try c.decodeIfPresent([Int].self, forKey: .grid) ?? [12, 12]
        try require(grid.count == 2 && grid.allSatisfy { $0 > 0 } && grid.reduce(1) { $0 * min($1, SizeLimits.tokens) } <= SizeLimits.tokens,
                    CodingKeys.grid, "must be two positive sizes [rows, columns] of at most \(SizeLimits.tokens) tokens, found \(grid)")
    }

    /// Any square grid can be pooled (adaptive pooling also widens a smaller one).
    func outputTokens(_ input: Int) -> Int? { squareGridSide(input).map { _ in grid[0] * grid[1] } }
}

public final class LDPv2Connector: Connector, @unchecked Sendable {
    public let manifest: ComponentManifest
    public let config: LDPv2Config
    public let parameters: [(name: String, tensor: Tensor)]
    let fc1, fc2: LinearLayer
    let pegWeight: Tensor  // [H, 1, 3, 3]
    let pegBias: Tensor    // [H]

    public init(manifest: ComponentManifest, weights w: ParameterLoader, context: ComponentBuildContext) throws {
        self.manifest = manifest
        config = try manifest.decodeConfig(LDPv2Config.self)
        let (input, output) = try settledWidths(manifest, context)
        fc1 = try LinearLayer(w, "mlp.mlp.0", input: input, output: output, bias: true)
        fc2 = try LinearLayer(w, "mlp.mlp.2", input: output, output: output, bias: true)
        pegWeight = try w.tensor("peg.peg.0.weight", shape: [output, 1, 3, 3])
        pegBias = try w.tensor("peg.peg.0.bias", shape: [output])
        parameters = w.loaded
    }

    public var inputWidth: Int { fc1.inputWidth }
    public var outputWidth: Int { fc2.outputWidth }
    public func outputTokens(forInputTokens inputTokens: Int) -> Int? { config.outputTokens(inputTokens) }

    public func forward(_ features: Tensor) throws -> Tensor {
        try checkWidth(features, inputWidth)
        let side = try gridSide(features)
        let x = fc2(activate(fc1(features), .gelu))
        let pooled = adaptiveAveragePool(x, side: side, rows: config.grid[0], columns: config.grid[1])
        return positionalConvolution(pooled, rows: config.grid[0], columns: config.grid[1])
    }

    /// nn.AdaptiveAvgPool2d over tokens laid out [side × side, C]: output cell i covers input
    /// rows floor(i·side/n) ..< ceil((i+1)·side/n), and likewise for columns.
    func adaptiveAveragePool(_ x: Tensor, side: Int, rows: Int, columns: Int) -> Tensor {
        let c = x.columns
        let out = Tensor(zeros: [rows * columns, c])
        func span(_ i: Int, _ n: Int) -> Range<Int> { (i * side / n)..<(((i + 1) * side + n - 1) / n) }
        for oy in 0..<rows {
            for ox in 0..<columns {
                let ys = span(oy, rows), xs = span(ox, columns)
                let dst = out.data + (oy * columns + ox) * c
                for y in ys { for xx in xs { let src = x.data + (y * side + xx) * c; for k in 0..<c { dst[k] += src[k] } } }
                let inv = 1 / Float(ys.count * xs.count)
                for k in 0..<c { dst[k] *= inv }
            }
        }
        return out
    }

    /// x + depthwise Conv2d(3×3, padding 1, bias)(x) over the [rows × columns, C] grid.
    func positionalConvolution(_ x: Tensor, rows: Int, columns: Int) -> Tensor {
        let c = x.columns
        let out = x.copy()
        for oy in 0..<rows {
            for ox in 0..<columns {
                let dst = out.data + (oy * columns + ox) * c
                for k in 0..<c { dst[k] += pegBias.data[k] }
                for dy in -1...1 where (0..<rows).contains(oy + dy) {
                    for dx in -1...1 where (0..<columns).contains(ox + dx) {
                        let src = x.data + ((oy + dy) * columns + ox + dx) * c
                        let tap = (dy + 1) * 3 + (dx + 1)
                        for k in 0..<c { dst[k] += pegWeight.data[k * 9 + tap] * src[k] }
                    }
                }
            }
        }
        return out
    }
}
