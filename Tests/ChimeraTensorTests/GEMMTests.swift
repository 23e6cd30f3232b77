import CChimeraKernels
import Foundation
import Testing
@testable import ChimeraTensor

extension KernelSelection {
    /// The kernels' GEMM and sequence attention against double-precision references, on shapes that
    /// exercise every edge: ragged row panels (12, or 6 with AVX2) and column panels (32, or 16), several weight blocks (128, or 96 when
    /// that shares 300 rows out more evenly over two threads),
    /// several K slices (512), strided rows, accumulation and biases, grouped-query heads, causal offsets and head
    /// widths that are not a multiple of 16. With the portable kernels forced, the callers' BLAS
    /// fallbacks must give the same answers.
    @Suite struct GEMMTests {
        /// Where the kernels' GEMM runs (AVX-512 or AVX2), as chosen, with AVX2 forced (its 6 × 16
        /// panels: on an AVX-512 CPU the same as on one without) and with the float micro-kernel forced
        /// for quantized weights (as without VNNI; chosen, they take the int8 product); elsewhere
        /// `chk_gemm_nt` declines and the callers' fallbacks, checked by the portable cases below, do
        /// the work. Quantized weights multiply X rounded through int8 blocks, bf16 weights X rounded
        /// to bfloat16, on every variant (bf16 forced onto the dot-product GEMM where the CPU has it).
        @Test(.enabled(if: chk_gemm_available() != 0, "this CPU has neither AVX-512 nor AVX2: chk_gemm_nt declines here"),
              arguments: WeightFormat.allCases, ["chosen", "avx2", "float", "bf16-dot"])
        func gemmMatchesReferenceOnRaggedShapes(format: WeightFormat, variant: String) throws {
            if variant == "bf16-dot" && (format != .bf16 || !hasBFloat16Dot) { return }
            defer { releaseKernels() }
            try forceKernels(variant)
            // Float formats also take a K that is not a multiple of 8 (CLIP's patch embedding: 588), so the
            // last columns of a slice are a partial transpose when X and W are packed, and an odd K
            // (bf16's pairs end in one element and a zero).
            let floatOnly = format.isQuantized ? [] : [(7, 20, 588), (14, 45, 37)]
            for (m, n, k) in [(3, 1, 32), (13, 33, 64), (25, 300, 608), (12, 128, 1056), (40, 97, 96)] + floatOnly {
                let w = try WeightMatrix.converting(Tensor(shape: [n, k], values: seededValues(n * k, seed: UInt64(n + k))), to: format)
                let widened = w.widened()
                let ldx = k + 5, ldc = n + 3  // strided rows: the product must not touch the gaps
                let x = seededValues(m * ldx, seed: UInt64(m))
                let multiplied = multipliedActivation(x, format: format, rows: m, columns: k, ld: ldx)
                let bias = seededValues(n, seed: UInt64(7 * n))
                for (accumulate, withBias) in [(0, false), (1, false), (0, true), (1, true)] {
                    var c = [Float](repeating: 0.5, count: m * ldc)
                    let done = x.withUnsafeBufferPointer { xp in
                        c.withUnsafeMutableBufferPointer { cp in
                            bias.withUnsafeBufferPointer { bp in
                                chk_gemm_nt(w.kernelFormat, w.data, w.scales, n, k, withBias ? bp.baseAddress : nil, xp.baseAddress, ldx, m,
                                            cp.baseAddress, ldc, Int32(accumulate), 2)
                            }
                        }
                    }
                    #expect(done == 1)
                    var worst: Float = 0
                    for i in 0..<m {
                        for j in 0..<ldc {
                            guard j < n else { #expect(c[i * ldc + j] == 0.5, "gap column \(j) was written"); continue }
                            var s = (accumulate == 1 ? 0.5 : 0.0) + (withBias ? Double(bias[j]) : 0)
                            for t in 0..<k { s += Double(multiplied[i * ldx + t]) * Double(widened.data[j * k + t]) }
                            worst = max(worst, abs(Float(s) - c[i * ldc + j]))
                        }
                    }
                    #expect(worst < 1e-4, "\(format) \(variant) \(m)×\(n)×\(k) accumulate \(accumulate) bias \(withBias): worst error \(worst)")
                }
            }
        }

        /// A product over no columns (k = 0) is declined, for the callers' fallback, rather than cut
        /// into slices of nothing (it divided by zero).
        @Test(.enabled(if: chk_gemm_available() != 0, "chk_gemm_nt declines everything here"))
        func anEmptyProductIsDeclined() {
            var c = [Float](repeating: 0.5, count: 12), x = [Float](repeating: 1, count: 4), w = [Float](repeating: 1, count: 4)
            #expect(chk_gemm_nt(CHK_F32, &w, nil, 4, 0, nil, &x, 1, 3, &c, 4, 0, 2) == 0)
            #expect(c.allSatisfy { $0 == 0.5 })
        }

        /// out[t, h] = softmax(scale q_h k_hᵀ, causal from `offset`) v_h, in double precision.
        static func referenceAttention(q: [Float], k: [Float], v: [Float], tokens: Int, keys: Int, heads: Int, kvHeads: Int,
                                       headDim d: Int, offset: Int?) -> [Float] {
            var out = [Float](repeating: 0, count: tokens * heads * d)
            let scale = 1 / Double(d).squareRoot()
            for h in 0..<heads {
                let kh = h / (heads / kvHeads)
                for t in 0..<tokens {
                    let visible = offset.map { min(keys, $0 + t + 1) } ?? keys
                    var s = (0..<visible).map { j in
                        (0..<d).reduce(0.0) { $0 + Double(q[t * heads * d + h * d + $1]) * Double(k[j * kvHeads * d + kh * d + $1]) } * scale
                    }
                    let top = s.max() ?? 0
                    s = s.map { exp($0 - top) }
                    let z = s.reduce(0, +)
                    for e in 0..<d {
                        out[t * heads * d + h * d + e] = Float((0..<visible).reduce(0.0) { $0 + s[$1] / z * Double(v[$1 * kvHeads * d + kh * d + e]) })
                    }
                }
            }
            return out
        }

        /// `variant`: "avx512" (the kernels as chosen), "avx2" or "portable" (forced: the callers'
        /// BLAS fallbacks for sequences, and one-query attention — the cache read in place — on
        /// those kernels).
        func checkAttention(variant: String) throws {
            if variant == "portable" { chk_force_portable(1) }
            if variant == "avx2" { try #require(chk_force_avx2(1) != 0, "this CPU has no AVX2") }
            defer {
                if variant == "portable" { chk_force_portable(0) }
                if variant == "avx2" { _ = chk_force_avx2(0) }
            }
            // (tokens, keys, heads, kvHeads, headDim, causal offset)
            let cases: [(Int, Int, Int, Int, Int, Int?)] = [
                (37, 37, 4, 4, 64, nil), (29, 29, 3, 3, 72, nil), (13, 13, 4, 2, 16, 0), (20, 50, 4, 1, 8, 30),
                (5, 5, 2, 2, 80, 0), (40, 40, 6, 2, 12, nil), (2, 9, 2, 1, 32, 7),
                (19, 19, 2, 1, 64, nil),  // a last block of 7 queries: the 7-row kernel
                (100, 130, 4, 2, 16, 30),  // causal blocks of queries over a prefix (BLAS: only the keys each block sees)
                // Decode (one query over the cache): query-head groups of 4+ (one small attention per
                // KV head), multi-head and multi-query heads (one pass per head).
                (1, 40, 8, 2, 64, 39), (1, 300, 16, 2, 72, 299), (1, 17, 4, 4, 16, 16), (1, 30, 12, 1, 8, 29),
                (1, 45, 28, 2, 64, 44),  // groups of 14 query heads: more rows than one block holds
                (1, 300, 14, 2, 64, 299),  // Qwen2-0.5B's groups of 7 (the 7-row kernel), in spans
                (1, 70, 6, 2, 12, 69),  // heads 12 wide: P·V's last 4 dimensions through a buffer (AVX2)
                // Through the cache, long enough to be cut into spans of keys that are combined:
                // with 14-head groups and 80-wide heads, and with one KV head (multi-query).
                (1, 700, 28, 2, 80, 699), (1, 530, 8, 1, 64, 529),
                (1, 2100, 4, 4, 64, 2099),  // spans no longer than half of L2 holds (1024 positions here)
            ]
            for (tokens, keys, heads, kvHeads, d, offset) in cases {
                let q = seededValues(tokens * heads * d, seed: 1), k = seededValues(keys * kvHeads * d, seed: 2)
                let v = seededValues(keys * kvHeads * d, seed: 3)
                let out = multiHeadAttention(queries: Tensor(shape: [tokens, heads * d], values: q), keys: k, values: v,
                                             keyCount: keys, heads: heads, kvHeads: kvHeads, headDim: d, causalOffset: offset)
                let expected = Self.referenceAttention(q: q, k: k, v: v, tokens: tokens, keys: keys, heads: heads, kvHeads: kvHeads,
                                                       headDim: d, offset: offset)
                let worst = zip(out.toArray(), expected).map { abs($0 - $1) }.max() ?? 0
                #expect(worst < 1e-5, "attention \(tokens)×\(keys) heads \(heads)/\(kvHeads) dim \(d) offset \(String(describing: offset)) \(variant): \(worst)")
                // The same keys and values through a KV cache (its own layout; filled in two appends,
                // capacity not a whole number of key panels), queries at positions offset ..< offset + tokens.
                guard let offset, offset + tokens == keys else { continue }
                // A float16 cache: attention as over keys and values rounded to float16.
                for precision in KVPrecision.allCases {
                    let cache = LayerKVCache(capacity: keys + 3, kvHeads: kvHeads, headDim: d, precision: precision)
                    let width = kvHeads * d, first = keys / 2
                    cache.append(keys: Tensor(shape: [first, width], values: Array(k[..<(first * width)])),
                                 values: Tensor(shape: [first, width], values: Array(v[..<(first * width)])))
                    cache.append(keys: Tensor(shape: [keys - first, width], values: Array(k[(first * width)...])),
                                 values: Tensor(shape: [keys - first, width], values: Array(v[(first * width)...])))
                    let stored = { (x: [Float]) in precision == .f16 ? x.map { Float(Float16($0)) } : x }
                    var keyRows = [Float](repeating: 0, count: keys * width), valueRows = keyRows
                    cache.rows(keys: &keyRows, values: &valueRows)
                    #expect(keyRows == stored(k) && valueRows == stored(v), "the \(precision) cache gives back the rows it was given")
                    let want = precision == .f32 ? expected : Self.referenceAttention(
                        q: q, k: stored(k), v: stored(v), tokens: tokens, keys: keys, heads: heads, kvHeads: kvHeads, headDim: d, offset: offset)
                    let cached = Tensor(zeros: [tokens, heads * d])
                    cachedAttention(queries: Tensor(shape: [tokens, heads * d], values: q), cache: cache, heads: heads, start: offset,
                                    workspace: Workspace(), into: cached)
                    let worstCached = zip(cached.toArray(), want).map { abs($0 - $1) }.max() ?? 0
                    #expect(worstCached < 1e-5, "\(precision) cached attention \(tokens)×\(keys) heads \(heads)/\(kvHeads) dim \(d) \(variant): \(worstCached)")
                }
            }
        }

        @Test func sequenceAttentionMatchesReference() throws { try checkAttention(variant: "avx512") }
        @Test func blasAttentionFallbackMatchesReference() throws { try checkAttention(variant: "portable") }
        @Test func avx2AttentionMatchesReference() throws { try checkAttention(variant: "avx2") }

        /// Several matrices of mixed formats over one input (q/k/v, gate/up) equal one product each.
        @Test func productsOfOneInputTogetherEqualEachAlone() throws {
            let x = Tensor(shape: [29, 96], values: seededValues(29 * 96, seed: 12))
            var products: [(matrix: WeightMatrix, bias: Tensor?, out: Tensor)] = []
            for (i, (format, rows)) in [(WeightFormat.f32, 70), (.q8_0, 200), (.bf16, 33), (.q4_0, 130)].enumerated() {
                let w = try WeightMatrix.converting(Tensor(shape: [rows, 96], values: seededValues(rows * 96, seed: UInt64(20 + i))), to: format)
                let bias = i % 2 == 0 ? Tensor(shape: [rows], values: seededValues(rows, seed: UInt64(30 + i))) : nil
                products.append((w, bias, Tensor(zeros: [29, rows])))
            }
            WeightMatrix.apply(x, products)
            for (w, bias, out) in products {
                let alone = Tensor(zeros: out.shape)
                w.apply(x, bias: bias, into: alone)
                #expect(maxAbsDifference(out, alone) == 0, "\(w.format) \(w.rows) rows")
            }
        }

        /// Decoded rows (one, two, seven: up to the matrices' row-by-row limits): two or three matrices
        /// in one pass over their rows (chk_matvec_rows, row counts that split groups of four across
        /// matrices) equal one product each.
        @Test func decodedRowsOfOneInputTogetherEqualEachAlone() throws {
            var products: [WeightMatrix.Product] = []
            for (i, (format, rows)) in [(WeightFormat.q4_0, 130), (.f16, 33), (.q8_0, 201)].enumerated() {
                let w = try WeightMatrix.converting(Tensor(shape: [rows, 96], values: seededValues(rows * 96, seed: UInt64(40 + i))), to: format)
                let bias = i != 1 ? Tensor(shape: [rows], values: seededValues(rows, seed: UInt64(50 + i))) : nil
                products.append((w, bias, Tensor(zeros: [1, rows])))
            }
            for tokens in [1, 2, 7] {
                let x = Tensor(shape: [tokens, 96], values: seededValues(tokens * 96, seed: UInt64(tokens)))
                let outs = products.map { p in (p.matrix, p.bias, Tensor(zeros: [tokens, p.matrix.rows])) }
                WeightMatrix.apply(x, outs[0], outs[1], outs[2])
                let pair = products.prefix(2).map { p in (p.matrix, p.bias, Tensor(zeros: [tokens, p.matrix.rows])) }
                WeightMatrix.apply(x, pair[0], pair[1])
                for (i, (w, bias, out)) in outs.enumerated() {
                    let alone = Tensor(zeros: out.shape)
                    w.apply(x, bias: bias, into: alone)
                    #expect(maxAbsDifference(out, alone) == 0, "\(w.format) \(w.rows) rows, \(tokens) tokens")
                    if i < 2 { #expect(maxAbsDifference(pair[i].2, alone) == 0, "pair: \(w.format), \(tokens) tokens") }
                }
            }
        }

        /// More matrices than one pass takes (CHK_MATVEC_PARTS) are computed in turn, each with its
        /// bias, as each alone.
        @Test func moreDecodeProductsThanOnePassTakesKeepTheirBiases() throws {
            let count = Int(CHK_MATVEC_PARTS) + 1, columns = 64
            let x = Tensor(shape: [1, columns], values: seededValues(columns, seed: 60))
            let matrices = try (0..<count).map { i in
                try WeightMatrix.converting(Tensor(shape: [20 + i, columns], values: seededValues((20 + i) * columns, seed: UInt64(61 + i))), to: .q8_0)
            }
            let biases = (0..<count).map { i in Tensor(shape: [20 + i], values: seededValues(20 + i, seed: UInt64(80 + i))) }
            let outs = matrices.map { Tensor(zeros: [1, $0.rows]) }
            let parts = (0..<count).map { i in matrices[i].matvecPart(into: outs[i].data, bias: biases[i].data) }
            chk_matvec_parts(parts, Int32(count), x.data, columns, 2)
            for i in 0..<count {
                let alone = Tensor(zeros: outs[i].shape)
                matrices[i].apply(x, bias: biases[i], into: alone)
                #expect(maxAbsDifference(outs[i], alone) == 0, "matrix \(i)")
            }
        }

        /// Several activation rows in one pass over the weights (chk_matvec_rows: each piece of rows
        /// multiplied by every token before the next — on AVX-512 by the kernels for several tokens,
        /// four quantized or two float ones at a time, else one token after another; more than
        /// CHK_MATVEC_TOKENS rows in groups; rows of x further apart than its width) equal each row's
        /// own product exactly, biases included, for matrices of every format whose row counts split
        /// the pieces and groups of four, on every kernel variant.
        @Test(arguments: ["chosen", "no-gfni", "one-row", "four-rows", "avx2", "portable"]) func matrixVectorRowsEqualEachRowAlone(variant: String) throws {
            defer { releaseKernels() }
            try forceKernels(variant)
            // 416 columns: 13 blocks (eights, a last four and a tail block); 100: floats' tail of 4.
            let shapes: [(columns: Int, ldx: Int, formats: [(WeightFormat, Int)])] = [
                (416, 420, [(.q4_0, 130), (.f16, 33), (.q6_0, 75), (.q8_0, 41), (.bf16, 18), (.f32, 7)]),
                (100, 104, [(.f32, 9), (.bf16, 6), (.f16, 13)]),
            ]
            for (columns, ldx, formats) in shapes {
                let matrices = try formats.enumerated().map { i, f in
                    try WeightMatrix.converting(Tensor(shape: [f.1, columns], values: seededValues(f.1 * columns, seed: UInt64(70 + i))), to: f.0)
                }
                let biases = matrices.enumerated().map { i, m in
                    i == 1 ? nil : Tensor(shape: [m.rows], values: seededValues(m.rows, seed: UInt64(75 + i)))
                }
                for tokens in [2, 3, 5, Int(CHK_MATVEC_TOKENS) + 3] {
                    let x = Tensor(shape: [tokens, ldx], values: seededValues(tokens * ldx, seed: UInt64(tokens)))
                    let outs = matrices.map { Tensor(zeros: [tokens, $0.rows]) }
                    let parts = (0..<matrices.count).map { i in matrices[i].matvecPart(into: outs[i].data, bias: biases[i]?.data) }
                    chk_matvec_rows(parts, Int32(parts.count), x.data, ldx, tokens, columns, 2)
                    for t in 0..<tokens {
                        for i in 0..<matrices.count {
                            let alone = Tensor(zeros: [1, matrices[i].rows])
                            var part = parts[i]
                            part.y = alone.data
                            chk_matvec_parts(&part, 1, x.data + t * ldx, columns, 2)
                            #expect(Array(outs[i].toArray()[t * matrices[i].rows..<(t + 1) * matrices[i].rows]) == alone.toArray(),
                                    "\(variant) \(matrices[i].format) × \(columns), token \(t) of \(tokens)")
                        }
                    }
                }
            }
        }

        /// A range of W's columns (an MLP's down projection a slice at a time), stored, accumulated
        /// or with a bias, on the GEMM, the decode rows and the fallback, against double-precision
        /// sums over the widened weights (and x rounded through int8 blocks for quantized weights, to
        /// bfloat16 for bf16); and a view
        /// of W's rows against the whole product. Seven
        /// blocks a row: q6_0's pairs and its odd last block, ranges that start inside a pair.
        @Test(arguments: WeightFormat.allCases) func columnRangesAndRowViewsMatchTheWidenedWeights(format: WeightFormat) throws {
            let n = 70, k = 224
            let w = try WeightMatrix.converting(Tensor(shape: [n, k], values: seededValues(n * k, seed: 14)), to: format)
            let widened = w.widened()
            let bias = Tensor(shape: [n], values: seededValues(n, seed: 15))
            for variant in ["chosen", "portable"] {
                if variant == "portable" { chk_force_portable(1) }
                defer { chk_force_portable(0) }
                for tokens in [17, 2] {
                    for range in [32..<160, 96..<224, 0..<64, 0..<224] {
                        let x = Tensor(shape: [tokens, range.count], values: seededValues(tokens * range.count, seed: UInt64(range.lowerBound + tokens)))
                        for (accumulate, withBias) in [(false, false), (true, false), (false, true), (true, true)] {
                            let out = Tensor(shape: [tokens, n], values: [Float](repeating: 0.5, count: tokens * n))
                            w.apply(x, columns: range, bias: withBias ? bias : nil, accumulate: accumulate, into: out)
                            if range == 0..<k && !accumulate {  // the ordinary product, whichever path it takes
                                let plain = Tensor(zeros: [tokens, n])
                                w.apply(x, bias: withBias ? bias : nil, into: plain)
                                #expect(maxAbsDifference(out, plain) == 0, "\(format) \(variant) \(tokens) tokens, all columns")
                                continue
                            }
                            var worst: Float = 0
                            let multiplied = multipliedActivation(x.toArray(), format: format, rows: tokens, columns: range.count, ld: range.count)
                            for t in 0..<tokens {
                                for j in 0..<n {
                                    var sum = (accumulate ? 0.5 : 0.0) + (withBias ? Double(bias.data[j]) : 0)
                                    for c in 0..<range.count { sum += Double(multiplied[t * range.count + c]) * Double(widened.data[j * k + range.lowerBound + c]) }
                                    worst = max(worst, abs(Float(sum) - out.data[t * n + j]))
                                }
                            }
                            #expect(worst < 1e-4, "\(format) \(variant) \(tokens) tokens, columns \(range), accumulate \(accumulate), bias \(withBias): \(worst)")
                        }
                    }
                    let x = Tensor(shape: [tokens, k], values: seededValues(tokens * k, seed: 16))
                    let whole = Tensor(zeros: [tokens, n]), part = Tensor(zeros: [tokens, 33])
                    w.apply(x, bias: bias, into: whole)
                    w.rows(21..<54).apply(x, bias: bias.elements(21..<54), into: part)
                    let expected = (0..<tokens).flatMap { t in (21..<54).map { whole.data[t * n + $0] } }
                    let worst = zip(part.toArray(), expected).map { abs($0 - $1) }.max() ?? 0
                    #expect(worst < 1e-5, "\(format) \(variant) \(tokens) tokens, rows 21..<54: \(worst)")
                }
            }
        }

        /// Quantized and bf16 weights: a batch's rows (the GEMM: int8 with VNNI, bfloat16 dot products
        /// on AMD's AVX-512 BF16 or when forced, floats when forced) equal each row decoded alone (the
        /// matrix-vector kernels), within float rounding — both multiply x rounded the same way
        /// (int8 blocks, bfloat16). Rows past one panel (6 with VNNI, 12 or 6 in floats), a ragged
        /// last column panel, K over one slice of the int8 and bfloat16 products (2048, 1024) and a bias.
        @Test(arguments: [WeightFormat.q8_0, .q4_0, .q6_0, .bf16], ["chosen", "float", "bf16-dot"])
        func batchRowsOfQuantizedWeightsEqualDecodedRows(format: WeightFormat, variant: String) throws {
            if variant == "bf16-dot" && (format != .bf16 || !hasBFloat16Dot) { return }
            defer { releaseKernels() }
            try forceKernels(variant)
            let n = 83, k = 2336, tokens = 17
            let w = try WeightMatrix.converting(Tensor(shape: [n, k], values: seededValues(n * k, seed: 90)), to: format)
            let bias = Tensor(shape: [n], values: seededValues(n, seed: 91))
            let x = Tensor(shape: [tokens, k], values: seededValues(tokens * k, seed: 92, scale: 3))
            let batch = Tensor(zeros: [tokens, n])
            w.apply(x, bias: bias, into: batch)
            var worst: Float = 0, largest: Float = 0
            for t in 0..<tokens {
                let row = Tensor(shape: [1, k], values: Array(x.toArray()[t * k..<(t + 1) * k])), decoded = Tensor(zeros: [1, n])
                w.apply(row, bias: bias, into: decoded)
                for j in 0..<n {
                    worst = max(worst, abs(decoded.data[j] - batch.data[t * n + j]))
                    largest = max(largest, abs(decoded.data[j]))
                }
            }
            #expect(worst <= 2e-6 * largest, "\(format) \(variant): rows differ by \(worst) (largest \(largest))")
        }

        /// Up to a matrix's `rowByRowLimit` (16 for q4_0 and q6_0, 12 for q8_0, 8 for the float
        /// formats: where packing every weight for a GEMM costs more than the matrix-vector
        /// kernels' pass) a batch goes through the decode kernels: its rows equal each row alone
        /// exactly.
        @Test(arguments: WeightFormat.allCases) func shortBatchesGoRowByRow(format: WeightFormat) throws {
            let n = 40, k = 96
            let w = try WeightMatrix.converting(Tensor(shape: [n, k], values: seededValues(n * k, seed: 95)), to: format)
            let limits: [WeightFormat: Int] = [.q4_0: 16, .q6_0: 16, .q8_0: 12, .f16: 8, .bf16: 8, .f32: 8]
            #expect(w.rowByRowLimit == limits[format])
            let tokens = w.rowByRowLimit
            let x = Tensor(shape: [tokens, k], values: seededValues(tokens * k, seed: 96)), batch = Tensor(zeros: [tokens, n])
            w.apply(x, bias: nil, into: batch)
            for t in 0..<tokens {
                let decoded = Tensor(zeros: [1, n])
                w.apply(Tensor(shape: [1, k], values: Array(x.toArray()[t * k..<(t + 1) * k])), bias: nil, into: decoded)
                #expect(decoded.toArray() == Array(batch.toArray()[t * n..<(t + 1) * n]), "\(format): row \(t) of \(tokens)")
            }
        }

        /// A non-finite activation (NaN, infinity) spoils only its own row of a batch and a decoded row
        /// — its block of the quantized activation takes a NaN scale — on every path: the int8 GEMM,
        /// the float one, AVX2, and the portable kernels with the BLAS fallback. (The quantizers
        /// used to skip a NaN when taking the block's largest magnitude and then store a code for it:
        /// a finite, wrong product.)
        @Test(arguments: [WeightFormat.q8_0, .q4_0], ["chosen", "float", "avx2", "portable"])
        func aNonFiniteActivationSpoilsOnlyItsRow(format: WeightFormat, variant: String) throws {
            defer { releaseKernels() }
            try forceKernels(variant)
            let n = 40, k = 96
            let w = try WeightMatrix.converting(Tensor(shape: [n, k], values: seededValues(n * k, seed: 93)), to: format)
            for tokens in [w.rowByRowLimit + 1, w.rowByRowLimit] { for bad in [Float.nan, .infinity] {  // the GEMM, the matrix-vector rows
                var values = seededValues(tokens * k, seed: 94)
                let clean = Tensor(zeros: [tokens, n]), spoiled = Tensor(zeros: [tokens, n])
                w.apply(Tensor(shape: [tokens, k], values: values), bias: nil, into: clean)
                values[4 * k + 50] = bad
                w.apply(Tensor(shape: [tokens, k], values: values), bias: nil, into: spoiled)
                for t in 0..<tokens {
                    let row = (0..<n).map { spoiled.data[t * n + $0] }, before = (0..<n).map { clean.data[t * n + $0] }
                    if t == 4 { #expect(row.allSatisfy { $0.isNaN }, "\(format) \(variant) \(bad), \(tokens) tokens: row 4 \(row)") }
                    else { #expect(row == before, "\(format) \(variant) \(bad), \(tokens) tokens: row \(t) changed") }
                }
                let decoded = Tensor(zeros: [1, n])
                w.apply(Tensor(shape: [1, k], values: Array(values[4 * k..<5 * k])), bias: nil, into: decoded)
                #expect(decoded.toArray().allSatisfy { $0.isNaN }, "\(format) \(variant) \(bad): decoded row \(decoded.toArray())")
            } }
        }

        @Test(arguments: WeightFormat.allCases) func productsWithoutTheGEMMMatchIt(format: WeightFormat) throws {
            let w = try WeightMatrix.converting(Tensor(shape: [70, 96], values: seededValues(70 * 96, seed: 9)), to: format)
            let bias = Tensor(shape: [70], values: seededValues(70, seed: 10))
            let x = Tensor(shape: [17, 96], values: seededValues(17 * 96, seed: 11))
            let fast = Tensor(zeros: [17, 70]), fallback = Tensor(zeros: [17, 70])
            w.apply(x, bias: bias, into: fast)
            chk_force_portable(1)
            w.apply(x, bias: bias, into: fallback)
            chk_force_portable(0)
            let worst = zip(fast.toArray(), fallback.toArray()).map { abs($0 - $1) }.max() ?? 0
            #expect(worst < 1e-4, "\(format): GEMM and fallback differ by \(worst)")
        }
    }
}
