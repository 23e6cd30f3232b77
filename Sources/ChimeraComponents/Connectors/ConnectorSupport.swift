import Chimera
import ChimeraTensor
import Foundation

// What every connector family needs: widths settled from the manifest or the assembly, input
// checks, and the square token grid that pooling and pixel-shuffle connectors work on.

public enum ConnectorError: LocalizedError {
    case badInput(connector: String, expected: Int, found: Int)
    case badTokens(connector: String, tokens: Int, reason: String)
    public var errorDescription: String? {
        switch self {
        case let .badInput(connector, expected, found):
            return "connector '\(connector)': features have width \(found), expected \(expected)"
        case let .badTokens(connector, tokens, reason):
            return "connector '\(connector)': cannot take \(tokens) tokens: \(reason)"
        }
    }
}

/// A connector config that knows how many tokens come out for a number in (nil: refused).
protocol ConnectorTokenMapping: Decodable, SendableMetatype {
    func outputTokens(_ input: Int) -> Int?
}

/// Input and output widths: the assembler's settled values, else the manifest's fixed ones.
func settledWidths(_ manifest: ComponentManifest, _ context: ComponentBuildContext) throws -> (input: Int, output: Int) {
    guard let input = context.inputWidth ?? manifest.inputWidth?.value,
          let output = context.outputWidth ?? manifest.outputWidth?.value else {
        throw ManifestError.invalid(file: manifest.origin,
            detail: "connector '\(manifest.id)' has width \"auto\"; it can only be built inside an assembly that settles it")
    }
    return (input, output)
}

extension Connector {
    func checkWidth(_ features: Tensor, _ expected: Int) throws {
        guard features.rank == 2, features.columns == expected else {
            throw ConnectorError.badInput(connector: id, expected: expected, found: features.columns)
        }
    }

    /// Side of the square grid the feature rows form (row-major, as the encoder's patches).
    func gridSide(_ features: Tensor) throws -> Int {
        guard let side = squareGridSide(features.rows) else {
            throw ConnectorError.badTokens(connector: id, tokens: features.rows, reason: "they do not form a square grid (select \"full\" on an encoder without a class token, \"patch\" on one with it)")
        }
        return side
    }
}

/// s when tokens = s² (s > 0), else nil.
func squareGridSide(_ tokens: Int) -> Int? {
    guard tokens > 0 else { return nil }
    let side = Int(Double(tokens).squareRoot().rounded())
    return side * side == tokens ? side : nil
}
