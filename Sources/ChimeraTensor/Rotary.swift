import CChimeraKernels
import Foundation

/// Rotary position embedding in the rotate-half layout used by Llama, Phi, StableLM, Qwen2 and
/// Gemma. Only the first `rotaryDim` dimensions of each head rotate (partial rotary for Phi-2 and
/// StableLM-2); the rest pass through.
public struct RotaryEmbedding: Sendable {
    public let headDim: Int
    public let rotaryDim: Int
    public let theta: Float
    /// inverse frequencies, rotaryDim / 2 of them, computed in float32 as transformers does.
    private let inverseFrequencies: [Float]

    public init(headDim: Int, rotaryDim: Int? = nil, theta: Float) {
        let dim = rotaryDim ?? headDim
        precondition(dim % 2 == 0 && dim <= headDim, "rotary dim \(dim) must be even and <= head dim \(headDim)")
        self.headDim = headDim
        self.rotaryDim = dim
        self.theta = theta
        inverseFrequencies = stride(from: 0, to: dim, by: 2).map { i in
            1 / powf(theta, Float(i) / Float(dim))
        }
    }

    /// The cosine and sine of each rotated frequency at positions start ..< start + tokens, as rows
    /// [cosines | sines] of `table` ([tokens, rotaryDim]): computed once per pass and used by every
    /// layer's queries and keys (per layer and tensor, the sines and cosines cost about as much as
    /// the rotation itself).
    public func angles(startPosition: Int, into table: Tensor) {
        let half = rotaryDim / 2
        precondition(table.columns == rotaryDim, "rotary table: \(table.shape), expected \(rotaryDim) columns")
        for t in 0..<table.rows {
            let position = Float(startPosition + t), row = table.data + t * rotaryDim
            for i in 0..<half {
                let angle = position * inverseFrequencies[i]
                row[i] = cosf(angle)
                row[half + i] = sinf(angle)
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
