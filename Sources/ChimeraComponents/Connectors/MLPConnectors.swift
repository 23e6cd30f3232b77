import Chimera
import ChimeraTensor
import Foundation

/// The LLaVA / TinyLLaVA projectors: `linear` (one nn.Linear) and `mlp` (N linears with an
/// activation between them: TinyLLaVA's mlp{N}x_gelu, LLaVA's multi_modal_projector). Token count
/// is unchanged.
public struct MLPConnectorConfig: Codable, Sendable {
    /// Number of linear layers (1 for `linear`).
    public var depth: Int
    public var activation: String
    /// Weight names of the linears, e.g. ["linear_1", "linear_2"] (LLaVA) or ["0", "2"] (TinyLLaVA's nn.Sequential).
    public var layerNames: [String]?

    enum CodingKeys: String, CodingKey, CaseIterable { case depth, activation, layerNames = "layer_names" }

    public init(depth: Int, activation: String = "gelu", layerNames: [String]? = nil) {
        self.depth = depth; self.activation = activation; self.layerNames = layerNames
    }

    public init(from decoder: Decoder) throws {
        try rejectUnknown(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        layerNames = try c.decodeIfPresent([String].self, forKey: .layerNames)
        depth = try c.decodeIfPresent(Int.self, forKey: .depth) ?? layerNames?.count ?? 2
        activation = try c.decodeIfPresent(String.self, forKey: .activation) ?? "gelu"
        try require(depth >= 1 && depth <= 64, CodingKeys.depth, "depth must be 1...64, found \(depth)")
        try require(Activation(configName: activation) != nil, CodingKeys.activation, "unsupported activation '\(activation)'")
        try require(layerNames == nil || layerNames!.count == depth, CodingKeys.layerNames,
                    "\(layerNames?.count ?? 0) names for \(depth) layers")
    }

    var names: [String] { layerNames ?? (1...depth).map { "linear_\($0)" } }
}

public final class MLPConnector: Connector, @unchecked Sendable {
    public let manifest: ComponentManifest
    public let parameters: [(name: String, tensor: Tensor)]
    let layers: [LinearLayer]
    let activation: Activation

    /// Builds from weights, or, without them, a seeded fresh initialization of the settled widths.
    public init(manifest: ComponentManifest, context: ComponentBuildContext, depthOverride: Int? = nil) throws {
        self.manifest = manifest
        var config = try manifest.decodeConfig(MLPConnectorConfig.self)
        if let depthOverride { config.depth = depthOverride }
        activation = Activation(configName: config.activation)!
        let (input, output) = try settledWidths(manifest, context)
        // Hidden widths are the output width, as in LLaVA and TinyLLaVA.
        let widths = [input] + Array(repeating: output, count: config.depth)
        if let weights = context.weights {
            layers = try (0..<config.depth).map { i in
                try LinearLayer(weights, config.names[i], input: widths[i], output: widths[i + 1], bias: true)
            }
            parameters = weights.loaded
        } else {
            var generator = SplitMix64(seed: manifest.seed ?? 0)
            layers = (0..<config.depth).map { i in
                LinearLayer(seededInput: widths[i], output: widths[i + 1], generator: &generator)
            }
            parameters = zip(config.names, layers).flatMap { name, layer in
                [(name + ".weight", layer.weight), (name + ".bias", layer.bias!)]
            }
        }
    }

    public var inputWidth: Int { layers.first!.inputWidth }
    public var outputWidth: Int { layers.last!.outputWidth }
    public func outputTokens(forInputTokens inputTokens: Int) -> Int? { inputTokens }

    public func forward(_ features: Tensor) throws -> Tensor {
        try checkWidth(features, inputWidth)
        var x = layers[0](features)
        for layer in layers.dropFirst() { x = layer(activate(x, activation)) }
        return x
    }
}
