import CChimeraKernels
import Foundation
import Testing
@testable import ChimeraTensor

/// The element-wise kernels of CChimeraKernels/elementwise.c, every variant this CPU runs
/// (AVX-512, AVX2, portable), against scalar Swift references computed in Double.
/// `chk_elementwise_use` switches the calling thread only, so other tests keep their kernels.
@Suite struct ElementwiseKernelTests {
    /// The variants this CPU runs; portable always.
    static var variants: [String] {
        ["portable", "avx2", "avx512"].filter { name in
            let ok = chk_elementwise_use(name) == 1
            chk_elementwise_use(nil)
            return ok
        }
    }

    func withVariant(_ name: String, _ body: () -> Void) {
        #expect(chk_elementwise_use(name) == 1)
        defer { chk_elementwise_use(nil) }
        #expect(String(cString: chk_elementwise_variant()) == name)
        body()
    }


    func reference(_ v: Double, _ activation: Activation) -> Double {
        switch activation {
        case .gelu: return 0.5 * v * (1 + erf(v / 2.0.squareRoot()))
        case .geluTanh: return 0.5 * v * (1 + tanh((2 / Double.pi).squareRoot() * (v + 0.044715 * v * v * v)))
        case .quickGelu: return v / (1 + exp(-1.702 * v))
        case .silu: return v / (1 + exp(-v))
        case .relu: return max(v, 0)
        }
    }

    @Test func argmaxFindsTheFirstLargestInEveryVariant() {
        // Lengths around the vector width and the 256-float spans, the largest placed at the start,
        // in a span's tail, at the very end, and twice (the first one counts).
        for n in [1, 7, 16, 17, 255, 256, 257, 1000, 151_936] {
            var x = seededValues(n, seed: UInt64(n), scale: 5)
            for at in Set([0, n / 2, n - 1]) {
                var y = x
                y[at] = 100
                if at + 300 < n { y[at + 300] = 100 }
                for variant in Self.variants {
                    withVariant(variant) { #expect(chk_argmax(y, n) == at, "\(variant) n \(n) at \(at)") }
                }
            }
            x = [Float](repeating: -.infinity, count: n)
            for variant in Self.variants { withVariant(variant) { #expect(chk_argmax(x, n) == 0, "\(variant): all -inf") } }
        }
    }

    @Test func argmaxPicksTheFirstNaNInEveryVariant() {
        // A NaN counts as larger than any number (torch.argmax's order), wherever it falls in a
        // span and whatever stands before it; an infinity without NaN is simply the largest.
        for n in [1, 7, 16, 17, 255, 256, 257, 1000, 151_936] {
            let x = seededValues(n, seed: UInt64(n) + 7, scale: 5)
            for at in Set([0, 5 % n, n / 2, n - 1]) {
                var y = x
                y[0] = 100
                y[at] = .nan
                if at + 300 < n { y[at + 300] = .nan }
                if at + 1 < n { y[at + 1] = .infinity }
                for variant in Self.variants {
                    withVariant(variant) { #expect(chk_argmax(y, n) == at, "\(variant) n \(n) NaN at \(at)") }
                }
                if n >= 65_536 {
                    for threads in [2, 3] {
                        #expect(chk_argmax_threaded(y, n, Int32(threads)) == at, "n \(n) threads \(threads) NaN at \(at)")
                    }
                }
                y = x
                y[at] = .infinity
                for variant in Self.variants {
                    withVariant(variant) { #expect(chk_argmax(y, n) == at, "\(variant) n \(n) infinity at \(at)") }
                }
            }
        }
    }

    @Test func threadedArgmaxFindsTheSameIndexAsOneThread() {
        // (The workers run the default variant: the kernel itself is checked per variant above.)
        // Vocabulary-sized inputs split into 2-4 shares: the largest in each share, on both sides of
        // a share's boundary, tied across shares (the first one counts), and everything -inf.
        for n in [65_536, 151_936, 200_003] {
            let x = seededValues(n, seed: UInt64(n), scale: 5)
            for threads in [1, 2, 3, 4] {
                let parts = min(threads, n / 32768)
                var places = Set([0, n - 1])
                for p in stride(from: 1, to: parts, by: 1) { places.formUnion([p * n / parts - 1, p * n / parts]) }
                for at in places.sorted() {
                    var y = x
                    y[at] = 100
                    #expect(chk_argmax_threaded(y, n, Int32(threads)) == at, "n \(n) threads \(threads) at \(at)")
                    y[n - 1 - (n - 1 - at) / 2] = 100  // a tie at or after it: the first still counts
                    #expect(chk_argmax_threaded(y, n, Int32(threads)) == at, "n \(n) threads \(threads) tie after \(at)")
                }
                #expect(chk_argmax_threaded(x, n, Int32(threads)) == chk_argmax(x, n))
                let infinite = [Float](repeating: -.infinity, count: n)
                #expect(chk_argmax_threaded(infinite, n, Int32(threads)) == 0, "all -inf")
            }
        }
    }

    @Test func everyVariantIsListedAndTheDefaultIsTheBest() {
        let variants = Self.variants
        #expect(variants.first == "portable")
        #expect(String(cString: chk_elementwise_variant()) == variants.last!)
        #expect(chk_elementwise_use("sse9") == 0)
    }

    @Test(arguments: Activation.allCases) func activationsWithBiasMatchTheScalarReference(_ activation: Activation) {
        // 37 columns: two full AVX-512 vectors and a tail; values out to ±30 reach exp's clamps.
        let rows = 5, cols = 37
        let input = seededValues(rows * cols, seed: 1, scale: 30) + [-100, 100, 0, -0.0]
        let bias = seededValues(cols, seed: 2, scale: 1)
        for variant in Self.variants {
            withVariant(variant) {
                var x = input
                chk_activate_rows(&x, bias, rows, cols, activation.kernelKind)
                var worst = 0.0
                for r in 0..<rows {
                    for c in 0..<cols {
                        let expected = reference(Double(input[r * cols + c]) + Double(bias[c]), activation)
                        worst = max(worst, abs(Double(x[r * cols + c]) - expected) / (1 + abs(expected)))
                    }
                }
                #expect(worst < 1e-6, "\(variant) \(activation): relative error \(worst)")
                // The four values past the rows are untouched.
                #expect(Array(x.suffix(4)) == [-100, 100, 0, -0.0], "\(variant) wrote past the rows")
                // Without bias, at the extremes: no NaN, the limits of each function.
                var extremes: [Float] = [-100, -30, 30, 100]
                chk_activate_rows(&extremes, nil, 1, 4, activation.kernelKind)
                for (value, input) in zip(extremes, [-100.0, -30, 30, 100]) {
                    #expect(abs(Double(value) - reference(input, activation)) < 1e-5, "\(variant) \(activation)(\(input)) = \(value)")
                }
            }
        }
    }

    @Test(arguments: Activation.allCases) func gatedActivationsMatchTheScalarReference(_ activation: Activation) {
        let rows = 3, cols = 29
        let gate = seededValues(rows * cols, seed: 16, scale: 12), up = seededValues(rows * cols, seed: 17, scale: 2)
        for variant in Self.variants {
            withVariant(variant) {
                var out = [Float](repeating: .nan, count: rows * cols)
                chk_gated_rows(gate, up, &out, rows, cols, activation.kernelKind)
                var inPlace = gate  // out is gate, as the decoder's gated MLP calls it
                inPlace.withUnsafeMutableBufferPointer { chk_gated_rows($0.baseAddress, up, $0.baseAddress, rows, cols, activation.kernelKind) }
                #expect(inPlace == out, "\(variant): in place differs")
                for i in 0..<(rows * cols) {
                    let expected = reference(Double(gate[i]), activation) * Double(up[i])
                    #expect(abs(Double(out[i]) - expected) < 1e-6 * (1 + abs(expected)), "\(variant) \(activation) [\(i)]")
                }
            }
        }
    }

    /// Each variant rounds every product and sum as unfused float math does, so that all give the
    /// same bits: head dims whose rotated half is whole vectors, a ragged tail (10 of 16 lanes) and
    /// partial rotary (the tail of each head untouched).
    @Test(arguments: [(64, 64), (80, 20), (16, 16), (24, 16)]) func rotaryMatchesTheUnfusedFormulaInEveryVariant(_ dims: (Int, Int)) {
        let (headDim, rotaryDim) = dims, tokens = 3, heads = 5, half = rotaryDim / 2
        let input = seededValues(tokens * heads * headDim, seed: 21, scale: 4)
        let angles = seededValues(tokens * rotaryDim, seed: 22, scale: 1)
        var expected = input
        for t in 0..<tokens {
            for h in 0..<heads {
                let base = (t * heads + h) * headDim
                for i in 0..<half {
                    let a = input[base + i], b = input[base + i + half]
                    let c = angles[t * rotaryDim + i], s = angles[t * rotaryDim + half + i]
                    let ac = a * c, bs = b * s, bc = b * c, as_ = a * s  // each rounded
                    expected[base + i] = ac - bs
                    expected[base + i + half] = bc + as_
                }
            }
        }
        for variant in Self.variants {
            withVariant(variant) {
                var x = input
                chk_rope_rows(&x, tokens, heads, headDim, rotaryDim, angles)
                #expect(x == expected, "\(variant), head dim \(headDim), rotary \(rotaryDim)")
            }
        }
    }

    @Test func softmaxRowsMatchTheReferenceAndMaskExactly() {
        // Rows of 45 values 48 apart; -inf marks masked keys, whose weight must be exactly 0.
        let rows = 4, cols = 45, ld = 48
        var input = seededValues(rows * ld, seed: 3, scale: 20)
        input[3] = -.infinity; input[ld + 44] = -.infinity; input[2 * ld] = -.infinity
        for variant in Self.variants {
            withVariant(variant) {
                var p = input
                chk_softmax_rows(&p, rows, cols, ld)
                for r in 0..<rows {
                    let row = (0..<cols).map { Double(input[r * ld + $0]) }
                    let m = row.max()!
                    let sum = row.reduce(0) { $0 + exp($1 - m) }
                    for c in 0..<cols {
                        let expected = exp(row[c] - m) / sum
                        #expect(abs(Double(p[r * ld + c]) - expected) < 1e-6, "\(variant) row \(r) column \(c)")
                    }
                    // The stride's padding is not touched.
                    #expect(Array(p[(r * ld + cols)..<(r * ld + ld)]) == Array(input[(r * ld + cols)..<(r * ld + ld)]))
                }
                #expect(p[3] == 0 && p[ld + 44] == 0 && p[2 * ld] == 0, "\(variant): masked keys get weight \(p[3]), \(p[ld + 44]), \(p[2 * ld])")
                // Without the division (attention divides its outputs): exp(x − max) and each row's sum.
                var e = input
                var sums = [Float](repeating: 0, count: rows), maxes = sums
                chk_exp_rows(&e, rows, cols, ld, &sums, &maxes)
                for r in 0..<rows {
                    let row = (0..<cols).map { Double(input[r * ld + $0]) }
                    let m = row.max()!
                    #expect(Double(maxes[r]) == m, "\(variant) row \(r) max \(maxes[r]), expected \(m)")
                    let sum = row.reduce(0) { $0 + exp($1 - m) }
                    #expect(abs(Double(sums[r]) - sum) < 1e-6 * sum, "\(variant) row \(r) sum \(sums[r]), expected \(sum)")
                    for c in 0..<cols {
                        #expect(abs(Double(e[r * ld + c]) - exp(row[c] - m)) < 1e-6, "\(variant) row \(r) column \(c)")
                    }
                    #expect(Array(e[(r * ld + cols)..<(r * ld + ld)]) == Array(input[(r * ld + cols)..<(r * ld + ld)]))
                }
            }
        }
    }

    func layerNormReference(_ x: [Float], weight: [Float], bias: [Float]?, eps: Float) -> [Double] {
        let v = x.map(Double.init), n = Double(x.count)
        let mean = v.reduce(0, +) / n
        let variance = v.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / n
        let inv = 1 / (variance + Double(eps)).squareRoot()
        return v.indices.map { (v[$0] - mean) * inv * Double(weight[$0]) + Double(bias?[$0] ?? 0) }
    }

    @Test func layerNormAndResidualMatchTheReference() {
        let rows = 3, n = 53
        let x = seededValues(rows * n, seed: 4, scale: 4).map { $0 + 2 }  // an offset mean
        let delta = seededValues(rows * n, seed: 5, scale: 1)
        let projectionBias = seededValues(n, seed: 6, scale: 1)
        let weight = seededValues(n, seed: 7, scale: 2), bias = seededValues(n, seed: 8, scale: 1)
        for variant in Self.variants {
            withVariant(variant) {
                for normBias in [bias, nil] {
                    var out = [Float](repeating: .nan, count: rows * n)
                    chk_layernorm_rows(x, &out, rows, n, weight, normBias, 1e-5)
                    var h = x
                    var fused = [Float](repeating: .nan, count: rows * n)
                    chk_residual_layernorm_rows(&h, delta, projectionBias, rows, n, weight, normBias, 1e-6, &fused)
                    for r in 0..<rows {
                        let row = Array(x[(r * n)..<(r * n + n)])
                        let summed = (0..<n).map { row[$0] + delta[r * n + $0] + projectionBias[$0] }
                        let expected = layerNormReference(row, weight: weight, bias: normBias, eps: 1e-5)
                        let expectedFused = layerNormReference(summed, weight: weight, bias: normBias, eps: 1e-6)
                        for c in 0..<n {
                            #expect(abs(Double(out[r * n + c]) - expected[c]) < 1e-5, "\(variant) layerNorm [\(r), \(c)]")
                            #expect(abs(h[r * n + c] - summed[c]) < 1e-6, "\(variant) residual [\(r), \(c)]")
                            #expect(abs(Double(fused[r * n + c]) - expectedFused[c]) < 1e-5, "\(variant) fused norm [\(r), \(c)]")
                        }
                    }
                }
                // Without a norm the kernel only adds, and leaves no output.
                var h = x
                chk_residual_layernorm_rows(&h, delta, nil, rows, n, nil, nil, 0, nil)
                #expect(h == zip(x, delta).map { $0 + $1 })
            }
        }
    }

    @Test func rmsNormMatchesTheReference() {
        let rows = 3, n = 53  // three full vectors and a ragged tail with AVX-512
        let x = seededValues(rows * n, seed: 16, scale: 4).map { $0 + 1 }
        let weight = seededValues(n, seed: 17, scale: 2)
        for variant in Self.variants {
            withVariant(variant) {
                for offset: Float in [0, 1] {  // 1: Gemma's stored (w - 1)
                    var out = [Float](repeating: .nan, count: rows * n)
                    chk_rmsnorm_rows(x, &out, rows, n, weight, offset, 1e-6)
                    var inPlace = x
                    inPlace.withUnsafeMutableBufferPointer { chk_rmsnorm_rows($0.baseAddress, $0.baseAddress, rows, n, weight, offset, 1e-6) }
                    for r in 0..<rows {
                        let row = x[(r * n)..<(r * n + n)].map(Double.init)
                        let inv = 1 / (row.reduce(0) { $0 + $1 * $1 } / Double(n) + 1e-6).squareRoot()
                        for c in 0..<n {
                            let expected = row[c] * inv * (Double(offset) + Double(weight[c]))
                            #expect(abs(Double(out[r * n + c]) - expected) < 1e-5, "\(variant) offset \(offset) [\(r), \(c)]")
                            #expect(inPlace[r * n + c] == out[r * n + c], "\(variant) in place [\(r), \(c)]")
                        }
                    }
                }
            }
        }
    }

    @Test func threadedWrappersAgreeWithTheKernels() {
        // Enough rows that the wrappers split them over threads.
        let rows = 64, n = 1024
        let x = Tensor(shape: [rows, n], values: seededValues(rows * n, seed: 9, scale: 3))
        let bias = Tensor(shape: [n], values: seededValues(n, seed: 10, scale: 1))
        let threaded = x.copy()
        biasActivateInPlace(threaded, bias: bias, .geluTanh)
        var direct = x.toArray()
        chk_activate_rows(&direct, bias.data, rows, n, Activation.geluTanh.kernelKind)
        #expect(threaded.toArray() == direct)
        let delta = Tensor(shape: [rows, n], values: seededValues(rows * n, seed: 11, scale: 1))
        let weight = Tensor(shape: [n], values: seededValues(n, seed: 12, scale: 1))
        let h = x.copy(), normalized = Tensor(zeros: [rows, n])
        residualLayerNorm(h, adding: delta, bias: bias, norm: (weight, nil, 1e-5), into: normalized)
        var hDirect = x.toArray(), nDirect = [Float](repeating: 0, count: rows * n)
        chk_residual_layernorm_rows(&hDirect, delta.data, bias.data, rows, n, weight.data, nil, 1e-5, &nDirect)
        #expect(h.toArray() == hDirect && normalized.toArray() == nDirect)
        let rms = Tensor(zeros: [rows, n])
        rmsNorm(x, weight: weight, eps: 1e-6, weightOffset: 1, into: rms)
        var rmsDirect = [Float](repeating: 0, count: rows * n)
        chk_rmsnorm_rows(x.data, &rmsDirect, rows, n, weight.data, 1, 1e-6)
        #expect(rms.toArray() == rmsDirect)
    }

    @Test(arguments: [nil, 0] as [Int?]) func threadedAttentionMatchesTheReference(_ causalOffset: Int?) {
        // 80 queries (split over threads), 2 heads of dim 8 sharing one KV head.
        let tokens = 80, heads = 2, headDim = 8
        let q = Tensor(shape: [tokens, heads * headDim], values: seededValues(tokens * heads * headDim, seed: 13, scale: 1))
        let k = Tensor(shape: [tokens, headDim], values: seededValues(tokens * headDim, seed: 14, scale: 1))
        let v = Tensor(shape: [tokens, headDim], values: seededValues(tokens * headDim, seed: 15, scale: 1))
        let out = multiHeadAttention(queries: q, keys: k.data, values: v.data, keyCount: tokens,
                                     heads: heads, kvHeads: 1, headDim: headDim, causalOffset: causalOffset)
        let scale = 1 / Double(headDim).squareRoot()
        var worst = 0.0
        for i in 0..<tokens {
            for h in 0..<heads {
                let visible = causalOffset.map { $0 + i + 1 } ?? tokens
                let scores = (0..<visible).map { j in
                    (0..<headDim).reduce(0.0) { $0 + Double(q.data[i * heads * headDim + h * headDim + $1]) * Double(k.data[j * headDim + $1]) } * scale
                }
                let m = scores.max()!, sum = scores.reduce(0) { $0 + exp($1 - m) }
                for d in 0..<headDim {
                    let expected = (0..<visible).reduce(0.0) { $0 + exp(scores[$1] - m) / sum * Double(v.data[$1 * headDim + d]) }
                    worst = max(worst, abs(Double(out.data[i * heads * headDim + h * headDim + d]) - expected))
                }
            }
        }
        #expect(worst < 1e-5, "attention error \(worst)")
    }
}
