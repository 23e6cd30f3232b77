import CChimeraKernels
import Foundation

/// How a model stretches its rotary frequencies past the context it was pretrained on, as
/// transformers' rope types (modeling_rope_utils): each changes the inverse frequencies once, and
/// YaRN also scales the cosines and sines.
public enum RotaryScaling: Sendable, Equatable {
    case none
    /// Every frequency divided by `factor` (positions interpolated).
    case linear(factor: Double)
    /// NTK-aware scaling: a pass whose positions end past `originalContext` rotates with a base
    /// raised for that length (transformers' dynamic_rope_update: a prompt's positions by the
    /// prompt's length, each decoded token by its own; keys keep the rotation they were cached
    /// with); within the original context it is the unscaled rotation.
    case dynamic(factor: Double, originalContext: Int)
    /// Llama 3.1: long wavelengths divided by `factor`, short ones kept, the band between blended.
    case llama3(factor: Double, lowFrequencyFactor: Double, highFrequencyFactor: Double, originalContext: Int)
    /// YaRN: frequencies blended between interpolated and original over a ramp of dimensions set by
    /// beta_fast/beta_slow, and the cosines and sines multiplied by `attentionFactor`.
    case yarn(factor: Double, originalContext: Int, betaFast: Double, betaSlow: Double, attentionFactor: Double, truncate: Bool)

    /// YaRN's magnitude correction for a context `scale` times longer (transformers' get_mscale):
    /// its default attention factor, or with mscale and mscale_all_dim, their ratio.
    public static func yarnMagnitude(_ scale: Double, _ mscale: Double = 1) -> Double {
        scale <= 1 ? 1 : 0.1 * mscale * log(scale) + 1
    }

    /// Dynamic scaling's base for a pass ending at `sequenceLength`; nil within the original context
    /// (or for another scaling). It grows with the length, in float32 as transformers' tensor
    /// arithmetic has it.
    func dynamicBase(theta: Float, dim: Int, sequenceLength: Int) -> Float? {
        guard case let .dynamic(factor, original) = self, sequenceLength > original else { return nil }
        let stretch = Float(factor) * Float(sequenceLength) / Float(original) - Float(factor - 1)
        return theta * powf(stretch, Float(Double(dim) / Double(dim - 2)))
    }

    /// The inverse frequency of rotated dimension `index` (even) of `dim` over `base`.
    static func inverseFrequency(base: Float, index: Int, dim: Int) -> Float { 1 / powf(base, Float(index) / Float(dim)) }

    /// The inverse frequencies of `dim` rotated dimensions over `theta`, and the factor on the
    /// cosines and sines; in float32 where transformers computes them in float32 tensors.
    /// `sequenceLength`: the positions a pass ends at (only dynamic scaling depends on it).
    func frequencies(theta: Float, dim: Int, sequenceLength: Int = 0) -> (inverse: [Float], cosineScale: Float) {
        let powers = stride(from: 0, to: dim, by: 2).map { i in powf(theta, Float(i) / Float(dim)) }
        let plain = powers.map { 1 / $0 }
        switch self {
        case .none: return (plain, 1)
        case .dynamic:
            guard let base = dynamicBase(theta: theta, dim: dim, sequenceLength: sequenceLength) else { return (plain, 1) }
            return (stride(from: 0, to: dim, by: 2).map { i in Self.inverseFrequency(base: base, index: i, dim: dim) }, 1)
        case .linear(let factor): return (plain.map { $0 / Float(factor) }, 1)
        case .llama3(let factor, let low, let high, let original):
            let lowWavelength = Float(Double(original) / low), highWavelength = Float(Double(original) / high)
            return (plain.map { frequency in
                let wavelength = Float(2 * Double.pi) / frequency
                if wavelength < highWavelength { return frequency }
                if wavelength > lowWavelength { return frequency / Float(factor) }
                let smooth = (Float(original) / wavelength - Float(low)) / Float(high - low)
                return (1 - smooth) * frequency / Float(factor) + smooth * frequency
            }, 1)
        case .yarn(let factor, let original, let betaFast, let betaSlow, let attentionFactor, let truncate):
            // The dimension at which a wavelength turns `rotations` times over the original context.
            func correctionDimension(_ rotations: Double) -> Double {
                Double(dim) * log(Double(original) / (rotations * 2 * Double.pi)) / (2 * log(Double(theta)))
            }
            var low = correctionDimension(betaFast), high = correctionDimension(betaSlow)
            if truncate { (low, high) = (low.rounded(.down), high.rounded(.up)) }
            (low, high) = (max(low, 0), min(high, Double(dim - 1)))
            if low == high { high += 0.001 }
            return (plain.indices.map { j in
                let ramp = min(max((Float(j) - Float(low)) / Float(high - low), 0), 1)
                let extrapolation = 1 - ramp
                return 1 / (Float(factor) * powers[j]) * (1 - extrapolation) + plain[j] * extrapolation
            }, Float(attentionFactor))
        }
    }
}

/// Rotary position embedding in the rotate-half layout used by Llama, Phi, StableLM, Qwen2 and
/// Gemma. Only the first `rotaryDim` dimensions of each head rotate (partial rotary for Phi-2 and
/// StableLM-2); the rest pass through.
public struct RotaryEmbedding: Sendable {
    public let headDim: Int
    public let rotaryDim: Int
    public let theta: Float
    public let scaling: RotaryScaling
    /// inverse frequencies, rotaryDim / 2 of them, computed in float32 as transformers does.
    private let inverseFrequencies: [Float]
    /// multiplies every cosine and sine (YaRN's attention factor; 1 otherwise).
    private let cosineScale: Float

    public init(headDim: Int, rotaryDim: Int? = nil, theta: Float, scaling: RotaryScaling = .none) {
        let dim = rotaryDim ?? headDim
        precondition(dim % 2 == 0 && dim <= headDim, "rotary dim \(dim) must be even and <= head dim \(headDim)")
        self.headDim = headDim
        self.rotaryDim = dim
        self.theta = theta
        self.scaling = scaling
        (inverseFrequencies, cosineScale) = scaling.frequencies(theta: theta, dim: dim)
    }

    /// The cosine and sine of each rotated frequency at positions start ..< start + tokens, as rows
    /// [cosines | sines] of `table` ([tokens, rotaryDim]): computed once per pass and used by every
    /// layer's queries and keys (per layer and tensor, the sines and cosines cost about as much as
    /// the rotation itself). `passEnd`: where the whole pass ends (a prompt fed in chunks ends
    /// after its last chunk), for dynamic scaling; by default the table's own end.
    public func angles(startPosition: Int, passEnd: Int? = nil, into table: Tensor) {
        let half = rotaryDim / 2
        precondition(table.columns == rotaryDim, "rotary table: \(table.shape), expected \(rotaryDim) columns")
        // Dynamic scaling's frequencies depend on where the pass ends: computed here, one at a time
        // (no array per decoded token).
        let dynamicBase = scaling.dynamicBase(theta: theta, dim: rotaryDim, sequenceLength: passEnd ?? startPosition + table.rows)
        for i in 0..<half {
            let frequency = dynamicBase.map { RotaryScaling.inverseFrequency(base: $0, index: 2 * i, dim: rotaryDim) } ?? inverseFrequencies[i]
            for t in 0..<table.rows {
                let angle = Float(startPosition + t) * frequency, row = table.data + t * rotaryDim
                row[i] = cosf(angle) * cosineScale
                row[half + i] = sinf(angle) * cosineScale
            }
        }
    }

    /// Rotates x, laid out as [tokens, heads, headDim], by the angles of its positions (`angles`).
    public func applyInPlace(_ x: Tensor, heads: Int, angles table: Tensor) {
        let tokens = x.count / (heads * headDim)
        precondition(table.rows == tokens && table.columns == rotaryDim, "rotary table: \(table.shape) for \(tokens) positions")
        chk_rope_rows(x.data, tokens, heads, headDim, rotaryDim, table.data)  // products and sums rounded unfused, in every variant
    }

    /// Rotates x, laid out as [tokens, heads, headDim], for absolute positions start..<start+tokens
    /// (with a table of its own: a pass over many layers computes one with `angles` and reuses it).
    public func applyInPlace(_ x: Tensor, heads: Int, startPosition: Int) {
        let table = Tensor(zeros: [x.count / (heads * headDim), rotaryDim])
        angles(startPosition: startPosition, into: table)
        applyInPlace(x, heads: heads, angles: table)
    }
}
