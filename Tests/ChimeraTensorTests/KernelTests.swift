import Foundation
import Testing
@testable import ChimeraTensor

@Suite struct KernelTests {
    @Test func linearMatchesHandComputation() {
        let x = Tensor(shape: [2, 3], values: [1, 2, 3, 4, 5, 6])
        let w = Tensor(shape: [2, 3], values: [1, 0, -1, 0.5, 0.5, 0.5])
        let b = Tensor(shape: [2], values: [10, 20])
        let y = linear(x, weight: w, bias: b)
        #expect(y.shape == [2, 2])
        #expect(y.toArray() == [8, 23, 8, 27.5])
    }

    @Test func layerNormAndRMSNorm() {
        let x = Tensor(shape: [1, 4], values: [1, 2, 3, 4])
        let ones = Tensor(shape: [4], values: [1, 1, 1, 1])
        let ln = layerNorm(x, weight: ones, bias: nil, eps: 0).toArray()
        let expected: [Float] = [-1.3416408, -0.4472136, 0.4472136, 1.3416408]
        for (a, b) in zip(ln, expected) { #expect(abs(a - b) < 1e-5) }
        let rms = rmsNorm(x, weight: ones, eps: 0).toArray()
        let r = (30.0 / 4.0).squareRoot()
        for (a, v) in zip(rms, [1.0, 2, 3, 4]) { #expect(abs(Double(a) - v / r) < 1e-5) }
        // Gemma stores (w - 1): a zero weight with offset 1 is the identity scale.
        let zeros = Tensor(zeros: [4])
        #expect(rmsNorm(x, weight: zeros, eps: 0, weightOffset: 1).toArray() == rms)
    }

    @Test func activationsAtKnownPoints() {
        #expect(abs(Activation.gelu.apply(1) - 0.8413447) < 1e-6)
        #expect(abs(Activation.geluTanh.apply(1) - 0.8411920) < 1e-6)
        #expect(abs(Activation.quickGelu.apply(1) - 0.8457957) < 1e-6)
        #expect(abs(Activation.silu.apply(1) - 0.7310586) < 1e-6)
        #expect(Activation(configName: "gelu_new") == .geluTanh)
        #expect(Activation(configName: "mish") == nil)
    }

    @Test func rotaryRotatesPairsHalfApart() {
        // One head of dim 4, theta 1: at position 1 the first pair rotates by 1 rad, the second by 1 rad·1^(-1/2).
        let rope = RotaryEmbedding(headDim: 4, theta: 10000)
        let x = Tensor(shape: [2, 1, 4], values: [1, 0, 0, 0, 1, 0, 0, 0])
        rope.applyInPlace(x, heads: 1, startPosition: 0)
        #expect(Array(x.toArray()[0..<4]) == [1, 0, 0, 0])  // position 0 is the identity
        let v = Array(x.toArray()[4..<8])
        #expect(abs(v[0] - cosf(1)) < 1e-6 && abs(v[2] - sinf(1)) < 1e-6)
        // partial rotary leaves the tail untouched
        let partial = RotaryEmbedding(headDim: 4, rotaryDim: 2, theta: 10000)
        let y = Tensor(shape: [1, 1, 4], values: [1, 2, 3, 4])
        partial.applyInPlace(y, heads: 1, startPosition: 3)
        #expect(Array(y.toArray()[2..<4]) == [3, 4])
    }

    @Test func causalAttentionMasksTheFuture() {
        // Two tokens, one head of dim 1: the first query may only see the first value.
        let q = Tensor(shape: [2, 1], values: [1, 1])
        let k = Tensor(shape: [2, 1], values: [0, 5])
        let v = Tensor(shape: [2, 1], values: [3, 7])
        let out = multiHeadAttention(queries: q, keys: k.data, values: v.data, keyCount: 2,
                                     heads: 1, kvHeads: 1, headDim: 1, causalOffset: 0)
        #expect(out.toArray()[0] == 3)
        let p1 = expf(5) / (1 + expf(5))
        #expect(abs(out.toArray()[1] - (3 * (1 - p1) + 7 * p1)) < 1e-5)
        let bidirectional = multiHeadAttention(queries: q, keys: k.data, values: v.data, keyCount: 2,
                                               heads: 1, kvHeads: 1, headDim: 1, causalOffset: nil)
        #expect(abs(bidirectional.toArray()[0] - (3 * (1 - p1) + 7 * p1)) < 1e-5)
    }
}
