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

    /// Rotates x, laid out as [tokens, heads, headDim], for absolute positions start..<start+tokens.
    public func applyInPlace(_ x: Tensor, heads: Int, startPosition: Int) {
        let tokens = x.count / (heads * headDim)
        let half = rotaryDim / 2
        // Stack scratch: no heap allocation per call.
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * half) { scratch in
        let cosines = scratch.baseAddress!, sines = scratch.baseAddress! + half
        for t in 0..<tokens {
            let position = Float(startPosition + t)
            for i in 0..<half {
                let angle = position * inverseFrequencies[i]
                cosines[i] = cosf(angle)
                sines[i] = sinf(angle)
            }
            for h in 0..<heads {
                let v = x.data + (t * heads + h) * headDim
                for i in 0..<half {
                    let a = v[i], b = v[i + half]
                    v[i] = a * cosines[i] - b * sines[i]
                    v[i + half] = b * cosines[i] + a * sines[i]
                }
            }
        }
        }
    }
}
