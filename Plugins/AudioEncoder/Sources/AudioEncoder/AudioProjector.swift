import ChimeraPluginKit
import Foundation

// Qwen2-Audio-style projector: average pooling of `pool` consecutive tokens (nn.AvgPool1d(pool,
// stride pool), a trailing partial window dropped) then one linear layer. Without weights it
// starts fresh like nn.Linear, from `seed`, at the widths the assembler settled.

public struct AudioProjectorConfig: Codable, Sendable {
    public var pool: Int
    enum CodingKeys: String, CodingKey, CaseIterable { case pool }
    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        pool = try decoder.container(keyedBy: CodingKeys.self).decodeIfPresent(Int.self, forKey: .pool) ?? 2
        if pool < 1 { throw DecodingError.dataCorrupted(.init(codingPath: [CodingKeys.pool], debugDescription: "must be at least 1, found \(pool)")) }
    }
}

public final class AudioProjector: Connector, @unchecked Sendable {
    public let manifest: ComponentManifest
    public let parameters: [(name: String, tensor: Tensor)]
    let pool: Int
    let weight: Tensor, bias: Tensor

    public init(manifest: ComponentManifest, context: ComponentBuildContext) throws {
        self.manifest = manifest
        pool = try manifest.decodeConfig(AudioProjectorConfig.self).pool
        guard let input = context.inputWidth ?? manifest.inputWidth?.value, let output = context.outputWidth ?? manifest.outputWidth?.value else {
            throw PluginKitError("connector '\(manifest.id)' has width \"auto\"; it can only be built inside an assembly that settles it")
        }
        if let weights = context.weights {
            let layer = try PluginLinear(weights, "linear", input: input, output: output)
            weight = layer.weight; bias = layer.bias!
            parameters = weights.loaded
        } else {
            var generator = SplitMix64(seed: manifest.seed ?? 0)
            let bound = 1 / Float(input).squareRoot()
            weight = Tensor(shape: [output, input], values: (0..<(output * input)).map { _ in generator.uniform(bound) })
            bias = Tensor(shape: [output], values: (0..<output).map { _ in generator.uniform(bound) })
            parameters = [("linear.weight", weight), ("linear.bias", bias)]
        }
    }

    public var inputWidth: Int { weight.shape[1] }
    public var outputWidth: Int { weight.shape[0] }
    public func outputTokens(forInputTokens inputTokens: Int) -> Int? { Self.tokens(inputTokens, pool: pool) }
    static func tokens(_ input: Int, pool: Int) -> Int? { input / pool > 0 ? input / pool : nil }

    public func forward(_ features: Tensor) throws -> Tensor {
        guard features.columns == inputWidth, let tokens = outputTokens(forInputTokens: features.rows) else {
            throw PluginKitError("connector '\(id)': features \(features.shape), expected [at least \(pool), \(inputWidth)]")
        }
        let pooled = Tensor(zeros: [tokens, inputWidth])
        for t in 0..<tokens {
            for j in 0..<pool { for c in 0..<inputWidth { pooled.data[t * inputWidth + c] += features.data[(t * pool + j) * inputWidth + c] } }
            for c in 0..<inputWidth { pooled.data[t * inputWidth + c] /= Float(pool) }
        }
        return linear(pooled, weight: weight, bias: bias)
    }
}
