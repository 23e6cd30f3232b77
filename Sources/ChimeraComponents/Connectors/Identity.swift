import Chimera
import ChimeraTensor
import Foundation

/// Passes the features through unchanged (MobileVLM's / LLaVA's "identity" projector): for an
/// encoder whose width already is the language model's. No config, no weights.
public struct IdentityConfig: Codable, Sendable {
    public init(from decoder: Decoder) throws { try rejectUnknown(decoder, NoKeys.self) }

    /// Every key is unknown.
    struct NoKeys: CodingKey, CaseIterable {
        static var allCases: [NoKeys] { [] }
        var stringValue: String
        var intValue: Int? { nil }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    static func validate(_ manifest: ComponentManifest) throws {
        _ = try manifest.decodeConfig(IdentityConfig.self)
        if let input = manifest.inputWidth?.value, let output = manifest.outputWidth?.value, input != output {
            throw ManifestError.invalid(file: manifest.origin, detail: "identity connector: input_width \(input) and output_width \(output) must be equal")
        }
    }
}

public final class IdentityConnector: Connector, @unchecked Sendable {
    public let manifest: ComponentManifest
    public let width: Int
    public var parameters: [(name: String, tensor: Tensor)] { [] }

    public init(manifest: ComponentManifest, context: ComponentBuildContext) throws {
        self.manifest = manifest
        try IdentityConfig.validate(manifest)
        let (input, output) = try settledWidths(manifest, context)
        guard input == output else {
            throw ManifestError.invalid(file: manifest.origin,
                detail: "identity connector '\(manifest.id)' cannot map width \(input) to width \(output); the encoder and the language model must have the same width")
        }
        width = input
    }

    public var inputWidth: Int { width }
    public var outputWidth: Int { width }
    public func outputTokens(forInputTokens inputTokens: Int) -> Int? { inputTokens }

    public func forward(_ features: Tensor) throws -> Tensor {
        try checkWidth(features, width)
        return features
    }
}
