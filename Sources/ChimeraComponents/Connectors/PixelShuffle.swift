import Chimera
import ChimeraTensor
import Foundation

/// nanoVLM's ModalityProjector (models/modality_projector.py), Idefics3 style: space-to-depth of
/// the square token grid by `factor` f (each f×f block of V-wide tokens becomes one token of width
/// V·f², block rows outer, columns inner), then one linear to H (`proj`, no bias; prefix "MP." in nanoVLM).
/// N tokens in, N/f² out. The manifest's input_width is the encoder width V.
public struct PixelShuffleConfig: Codable, Sendable, ConnectorTokenMapping {
    public var factor: Int
    public var bias: Bool = false

    enum CodingKeys: String, CodingKey, CaseIterable { case factor, bias }

    public init(from decoder: Decoder) throws {
        try rejectUnknown(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        factor = try c.decode(Int.self, forKey: .factor)
        bias = try c.decodeIfPresent(Bool.self, forKey: .bias) ?? false
        // factor² tokens become one: more than 64 × 64 would leave nothing of any encoder's grid.
        try require(factor > 0 && factor <= 64, CodingKeys.factor, "must be positive and at most 64, found \(factor)")
    }

    /// Why `tokens` cannot be shuffled, nil when they can.
    func refusal(_ tokens: Int) -> String? {
        guard let side = squareGridSide(tokens) else { return "they do not form a square grid" }
        return side % factor == 0 ? nil : "the grid side \(side) is not a multiple of factor \(factor)"
    }

    func outputTokens(_ input: Int) -> Int? { refusal(input) == nil ? input / (factor * factor) : nil }
}

public final class PixelShuffleConnector: Connector, @unchecked Sendable {
    public let manifest: ComponentManifest
    public let config: PixelShuffleConfig
    public let parameters: [(name: String, tensor: Tensor)]
    public let inputWidth: Int
    let projection: LinearLayer

    public init(manifest: ComponentManifest, weights w: ParameterLoader, context: ComponentBuildContext) throws {
        self.manifest = manifest
        config = try manifest.decodeConfig(PixelShuffleConfig.self)
        let (input, output) = try settledWidths(manifest, context)
        inputWidth = input
        projection = try LinearLayer(w, "proj", input: input * config.factor * config.factor, output: output, bias: config.bias)
        parameters = w.loaded
    }

    public var outputWidth: Int { projection.outputWidth }
    public func outputTokens(forInputTokens inputTokens: Int) -> Int? { config.outputTokens(inputTokens) }

    public func forward(_ features: Tensor) throws -> Tensor {
        try checkWidth(features, inputWidth)
        if let reason = config.refusal(features.rows) {
            throw ConnectorError.badTokens(connector: id, tokens: features.rows, reason: reason)
        }
        // Rows of the grid are side·V floats; an f × f block of tokens is f rows of f·V floats.
        let side = squareGridSide(features.rows)!, f = config.factor
        let shuffled = gatherBlocks(features.data, planes: 1, height: side, width: side * inputWidth,
                                    blockHeight: f, blockWidth: f * inputWidth)
        return projection(shuffled)
    }
}
