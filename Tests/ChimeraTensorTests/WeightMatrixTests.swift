import CChimeraKernels
import Foundation
import Testing
@testable import ChimeraTensor

extension KernelSelection {
    /// Weight formats against float32 arithmetic on the same (widened) weights.
    @Suite struct WeightMatrixTests {
        static func random(_ shape: [Int], seed: UInt64, scale: Float = 1) -> Tensor {
            Tensor(shape: shape, values: seededValues(shape.reduce(1, *), seed: seed, scale: scale))
        }

        /// Reference y = x Wᵀ + b in double precision over the given float weights.
        static func reference(_ x: Tensor, _ w: Tensor, _ b: Tensor?) -> [Float] {
            let rows = w.shape[0], cols = w.shape[1]
            var out: [Float] = []
            for t in 0..<x.rows {
                for r in 0..<rows {
                    var s = Double(b?.data[r] ?? 0)
                    for i in 0..<cols { s += Double(x.data[t * cols + i]) * Double(w.data[r * cols + i]) }
                    out.append(Float(s))
                }
            }
            return out
        }

        static func worst(_ a: [Float], _ b: [Float]) -> Float { zip(a, b).map { abs($0 - $1) }.max() ?? 0 }

        // 67 rows (odd: tests the row tail of the 2-row kernels), 160 columns (5 blocks: the block tail).
        // Rounding x to bfloat16 matters: against x itself bf16's products differ by ~1e-2 here.
        @Test(arguments: [WeightFormat.f32, .f16, .bf16]) func halfFormatsEqualFloatMathOnWidenedWeights(format: WeightFormat) throws {
            let w = Self.random([67, 160], seed: 1), b = Self.random([67], seed: 2)
            let m = try WeightMatrix.converting(w, to: format)
            let widened = m.widened()
            for tokens in [1, 2, m.rowByRowLimit, m.rowByRowLimit + 1] {  // matrix-vector rows, then the GEMM
                let x = Self.random([tokens, 160], seed: UInt64(tokens))
                let out = Tensor(zeros: [tokens, 67])
                m.apply(x, bias: b, into: out)
                // bf16 weights multiply x rounded to bfloat16, on every path.
                let multiplied = Tensor(shape: x.shape, values: multipliedActivation(x.toArray(), format: format, rows: tokens, columns: 160, ld: 160))
                #expect(Self.worst(out.toArray(), Self.reference(multiplied, widened, b)) < 1e-4, "\(format) with \(tokens) tokens")
            }
            // Rounding of the conversion itself: f16 keeps 11 bits, bf16 8.
            let relative: Float = format == .f16 ? 1.0 / 2048 : 1.0 / 256
            for i in 0..<w.count { #expect(abs(widened.data[i] - w.data[i]) <= relative * abs(w.data[i]) + 1e-7) }
        }

        /// On the AVX-512 path (when the CPU has it) and the portable one; 17 values: a whole
        /// vector and a tail. NaNs become quiet NaNs without payload, keeping their sign.
        @Test(arguments: ["chosen", "portable"]) func float16ConversionMatchesSwift(variant: String) {
            if variant == "portable" { chk_force_portable(1) }
            defer { if variant == "portable" { chk_force_portable(0) } }
            let values: [Float] = [0, -0, 1, -1, 65504, 65520, 1e-8, 6e-8, 5.9604645e-08, 3e-5, 6.1e-5, 0.1, 1.0009765625, 1.00048828125, .infinity, -.infinity, 1e10]
            var out = [UInt16](repeating: 0, count: values.count)
            chk_to_f16(values, values.count, &out)
            for (v, h) in zip(values, out) { #expect(h == Float16(v).bitPattern, "\(v)") }
            let nans = [Float(bitPattern: 0x7F80_0001), Float(bitPattern: 0xFFC1_2345), .nan]
            var nanOut = [UInt16](repeating: 0, count: 3)
            chk_to_f16(nans, 3, &nanOut)
            #expect(nanOut == [0x7E00, 0xFE00, 0x7E00])
            var bf = [UInt16](repeating: 0, count: 3)
            chk_to_bf16([1.00390625, 1.01171875, -2.5], 3, &bf)  // ties to even: down, up; exact
            #expect(bf == [0x3F80, 0x3F82, 0xC020])
        }

        /// The stored blocks against their definition, computed here: Q8_0 scale amax/127 and values
        /// round(x / scale) within ±127; Q4_0 scale (value of largest magnitude, the first of equals)/−8
        /// and values round(x / scale) + 8 within 0 ... 15, element j in byte j's low nibble and j + 16
        /// in its high one; Q6_0 as Q4_0 with −32 and 0 ... 63, by pairs of blocks A, B: A's low four bits
        /// as Q4_0's nibbles, then B's, then byte 32+j with the top two bits of A_j, B_j, A_{j+16}, B_{j+16}
        /// (bits 0-1, 2-3, 4-5, 6-7), and an odd last block (96 columns: the third) as its nibbles and
        /// the top two bits of elements k, k+8, k+16, k+24 in byte 16+k;
        /// scales are float16 and values are rounded (ties to even) against the
        /// stored scale. Blocks: random, exact ties, all zeros (signed), tiny (subnormal scale),
        /// a NaN, an infinity, and magnitudes tied across signs. 40 rows: split over the threads.
        @Test(arguments: [WeightFormat.q8_0, .q4_0, .q6_0]) func quantizedBlocksMatchTheirDefinition(format: WeightFormat) throws {
            let rows = 40, columns = 96
            var values = seededValues(rows * columns, seed: 21, scale: 1)
            for block in 0..<(rows * columns / 32) {
                let at = block * 32
                switch block % 8 {
                case 1:  // halfway between two steps (the last value sets the scale to 1/16, 1/2)
                    for i in 0..<31 { values[at + i] = format == .q8_0 ? (Float(i % 17) - 8.5) / 16 : (Float(i % 15) - 7) / 2 + 0.25 }
                    values[at + 31] = format == .q8_0 ? 127.0 / 16 : format == .q4_0 ? -4 : -16
                case 2: for i in 0..<32 { values[at + i] = block % 16 == 2 ? -0.0 : 0 }
                case 3: for i in 0..<32 { values[at + i] *= 1e-6 }
                case 4: values[at + 5] = .nan
                case 5: values[at + 7] = -.infinity
                case 6: values[at + 3] = -2; values[at + 9] = 2
                default: break
                }
            }
            let m = try WeightMatrix.converting(Tensor(shape: [rows, columns], values: values), to: format)
            let scales = try #require(m.scales)
            func nearest(_ v: Float, _ lo: Float, _ hi: Float) -> Int { v.isNaN ? Int(lo) : Int(min(max(v, lo), hi).rounded(.toNearestOrEven)) }
            for block in 0..<(rows * columns / 32) {
                let x = Array(values[block * 32 ..< block * 32 + 32])
                let amax = x.filter { !$0.isNaN }.map(abs).max() ?? 0
                if format == .q8_0 {
                    let h = Float16(amax / 127), d = Float(h), id = d > 0 ? 1 / d : 0
                    #expect(scales[block] == h.bitPattern, "block \(block) scale")
                    let stored = m.data.assumingMemoryBound(to: Int8.self) + block * 32
                    for i in 0..<32 { #expect(Int(stored[i]) == nearest(x[i] * id, -127, 127), "block \(block) value \(i)") }
                } else if format == .q6_0 {
                    let extreme = amax > 0 ? x.first { abs($0) == amax }! : 0
                    let h = Float16(extreme / -32), d = Float(h), id = d != 0 ? 1 / d : 0
                    #expect(scales[block] == h.bitPattern, "block \(block) scale")
                    let perRow = columns / 32, b = block % perRow
                    let stored = m.data.assumingMemoryBound(to: UInt8.self) + block / perRow * perRow * 24 + b / 2 * 48
                    let paired = b / 2 * 2 + 1 < perRow, which = b % 2
                    for e in 0..<32 {
                        let nibbles = paired ? stored + 16 * which : stored
                        let low = e < 16 ? Int(nibbles[e]) & 15 : Int(nibbles[e - 16]) >> 4
                        let top = paired ? Int(stored[32 + e % 16]) >> (2 * which + 4 * (e / 16)) & 3 : Int(stored[16 + e % 8]) >> (2 * (e / 8)) & 3
                        #expect(low | top << 4 == nearest(x[e] * id, -32, 31) + 32, "block \(block) value \(e)")
                    }
                } else {
                    let extreme = amax > 0 ? x.first { abs($0) == amax }! : 0
                    let h = Float16(extreme / -8), d = Float(h), id = d != 0 ? 1 / d : 0
                    #expect(scales[block] == h.bitPattern, "block \(block) scale")
                    let stored = m.data.assumingMemoryBound(to: UInt8.self) + block * 16
                    for j in 0..<16 {
                        let expected = (nearest(x[j] * id, -8, 7) + 8) | (nearest(x[j + 16] * id, -8, 7) + 8) << 4
                        #expect(Int(stored[j]) == expected, "block \(block) byte \(j)")
                    }
                }
            }
        }

        /// Converting a stored matrix chunk by chunk gives the bytes converting its widened copy gives.
        @Test(arguments: [WeightFormat.bf16, .q8_0, .q4_0, .q6_0]) func storedMatricesConvertAsTheirWidenedCopies(source: WeightFormat) throws {
            let stored = try WeightMatrix.converting(Self.random([300, 96], seed: 31), to: source)  // rows split over the threads
            for target in WeightFormat.allCases where target != source {
                let direct = try stored.converted(to: target), viaCopy = try WeightMatrix.converting(stored.widened(), to: target)
                #expect(direct.format == target)
                #expect(direct.widened().toArray() == viaCopy.widened().toArray(), "\(source) → \(target)")
                if target.isQuantized { #expect(memcmp(direct.data, viaCopy.data, direct.byteCount) == 0, "\(source) → \(target) bytes") }
            }
            #expect(try stored.converted(to: source) === stored)
        }

        /// Pieces of weight memory are aligned, do not overlap, and a piece larger than a region
        /// gets one of its own.
        @Test func weightMemoryPiecesAreAlignedAndDisjoint() {
            let sizes = [1, 100, 4096, 3 << 20, WeightMemory.regionSize + 5, 64, 7 << 20]
            let pieces = sizes.map { WeightMemory.allocate($0) }
            for (i, (piece, size)) in zip(pieces, sizes).enumerated() {
                #expect(Int(bitPattern: piece.pointer) % 64 == 0, "piece \(i)")
                memset(piece.pointer, Int32(i + 1), size)
            }
            for (i, (piece, size)) in zip(pieces, sizes).enumerated() {
                let bytes = UnsafeRawBufferPointer(start: piece.pointer, count: size)
                #expect(bytes.allSatisfy { $0 == UInt8(i + 1) }, "piece \(i) was overwritten")
            }
            // The big piece has a region of its own.
            #expect(pieces[4].owner !== pieces[3].owner && pieces[4].owner !== pieces[5].owner)
        }

        @Test func randomFillOnThreadsEqualsSequentialDraws() {
            var threaded = SplitMix64(seed: 5), sequential = SplitMix64(seed: 5)
            for count in [3, 200_001] {  // one thread; split
                var out = [Float](repeating: 0, count: count)
                threaded.fillUniform(&out, count: count, bound: 0.5)
                let expected = (0..<count).map { _ in sequential.uniform(0.5) }
                #expect(out == expected, "\(count) values")
            }
            #expect(threaded.next() == sequential.next())  // both went on past the values
        }

        @Test(arguments: [WeightFormat.q8_0, .q6_0, .q4_0]) func quantizedProductsMatchTheirDequantizedWeights(format: WeightFormat) throws {
            let w = Self.random([67, 160], seed: 3), b = Self.random([67], seed: 4)
            let m = try WeightMatrix.converting(w, to: format)
            let dequantized = m.widened()
            // Quantization error of the weights themselves: half a step of the block scale (|w| ≤ 1), and
            // for q4_0 and q6_0 a whole step on the side opposite the extreme value (their last level is not used there).
            let bound: Float = format == .q8_0 ? 0.5 / 127 : format == .q6_0 ? 1.0 / 32 : 1.0 / 8
            for i in 0..<w.count { #expect(abs(dequantized.data[i] - w.data[i]) <= bound * 1.01 + 1e-6) }
            for tokens in [1, 5, m.rowByRowLimit, m.rowByRowLimit + 1] {  // matrix-vector rows, then the GEMM
                let x = Self.random([tokens, 160], seed: 10 + UInt64(tokens))
                let out = Tensor(zeros: [tokens, 67])
                m.apply(x, bias: b, into: out)
                // Decode and prefill both multiply x rounded through int8 blocks (|error| ≤ amax/254 each).
                let rounded = Tensor(shape: x.shape, values: roundedThroughInt8Blocks(x.toArray(), rows: tokens, columns: 160, ld: 160))
                #expect(Self.worst(out.toArray(), Self.reference(rounded, dequantized, b)) < 2e-4, "\(format) with \(tokens) tokens")
                #expect(Self.worst(out.toArray(), Self.reference(x, dequantized, b)) < 0.15, "\(format) with \(tokens) tokens, x unrounded")
            }
        }

        @Test(arguments: WeightFormat.allCases) func portableKernelsAgreeWithTheChosenOnes(format: WeightFormat) throws {
            let w = Self.random([67, 160], seed: 5)
            let m = try WeightMatrix.converting(w, to: format)
            let x = Self.random([1, 160], seed: 6)
            let simd = Tensor(zeros: [1, 67]), portable = Tensor(zeros: [1, 67])
            m.apply(x, bias: nil, into: simd)
            chk_force_portable(1)
            defer { chk_force_portable(0) }
            #expect(String(cString: chk_kernel_variant()) == "portable")
            m.apply(x, bias: nil, into: portable)
            #expect(Self.worst(simd.toArray(), portable.toArray()) < 1e-4)
        }

        @Test func quantizedFormatsRefuseUnalignedWidths() {
            #expect(throws: WeightMatrixError.notBlockAligned(name: "w", columns: 40, format: .q8_0)) {
                try WeightMatrix.converting(Self.random([2, 40], seed: 1), to: .q8_0, name: "w")
            }
        }

        /// The spans a waiting worker prefetches for the next product are the front of the share it
        /// claims first (rows t·chunks/threads·chunk on, see rangeClaims… below), in each part's
        /// values and scales, within the byte budget.
        @Test func productHintsAreTheFrontOfTheWorkersShare() throws {
            let columns = 896  // q4_0: 448 bytes of values and 56 of scales a row; claims of 16 rows
            let matrices = try [896, 128, 128].enumerated().map { i, rows in
                try WeightMatrix.converting(Self.random([rows, columns], seed: UInt64(30 + i)), to: .q4_0)
            }
            let parts = matrices.map { $0.matvecPart(into: nil, bias: nil) }
            func hint(threads: Int32, worker: Int32, most: Int) -> [(start: UnsafeRawPointer?, bytes: Int)] {
                var spans = [chk_byte_span](repeating: chk_byte_span(), count: Int(CHK_HINT_SPANS))
                let n = chk_product_hint(parts, Int32(parts.count), columns, threads, worker, most, &spans)
                return spans[0..<Int(n)].map { ($0.start, $0.bytes) }
            }
            func at(_ m: WeightMatrix, row: Int) -> (values: UnsafeRawPointer, scales: UnsafeRawPointer) {
                (UnsafeRawPointer(m.data + row * columns / 2), UnsafeRawPointer(m.scales! + row * columns / 32))
            }
            // 1152 rows in 72 claims of 16: worker 1 of 2 owns claims 36..<72, rows 576..<1152, which
            // are q's rows 576..<896 and all of k's and v's.
            let whole = hint(threads: 2, worker: 1, most: 1 << 20)
            let starts: [UnsafeRawPointer] = [at(matrices[0], row: 576).values, at(matrices[0], row: 576).scales,
                                              at(matrices[1], row: 0).values, at(matrices[1], row: 0).scales,
                                              at(matrices[2], row: 0).values, at(matrices[2], row: 0).scales]
            #expect(whole.map { $0.start! } == starts)
            #expect(whole.map(\.bytes) == [320 * 448, 320 * 56, 128 * 448, 128 * 56, 128 * 448, 128 * 56])
            // A budget of 100 KiB: ⌈102400 / 504⌉ = 204 rows of q.
            #expect(hint(threads: 2, worker: 1, most: 100 << 10).map(\.bytes) == [204 * 448, 204 * 56])
            // Of three threads, worker 2 owns claims 48..<72: rows 768 on.
            #expect(hint(threads: 3, worker: 2, most: 1 << 20).first?.start == at(matrices[0], row: 768).values)
            // No worker 0 (the caller), none past the threads, no hint on one thread.
            #expect(hint(threads: 2, worker: 0, most: 1 << 20).isEmpty && hint(threads: 2, worker: 2, most: 1 << 20).isEmpty)
            #expect(hint(threads: 1, worker: 1, most: 1 << 20).isEmpty)
        }

        /// For a decoded token's attention: the keys and values of the first spans the worker owns.
        @Test func attentionHintsAreTheWorkersFirstSpans() {
            // 940 keys, 2 KV heads of 64, 2 threads: 8 spans of 128 keys a head; worker 1 owns head 1.
            let capacity = 1024, headDim = 64, kvHeads = 2
            let keys = UnsafeMutableRawPointer.allocate(byteCount: 4 * kvHeads * capacity * headDim, alignment: 64)
            let values = UnsafeMutableRawPointer.allocate(byteCount: 4 * kvHeads * capacity * headDim, alignment: 64)
            defer { keys.deallocate(); values.deallocate() }
            var spans = [chk_byte_span](repeating: chk_byte_span(), count: Int(CHK_HINT_SPANS))
            let n = Int(chk_attention_hint(keys, values, capacity, 940, kvHeads, headDim, 0, 2, 1, 256 << 10, &spans))
            let span = 4 * 128 * headDim, head = 4 * capacity * headDim  // bytes of a span's keys (or values), of a head's
            var expected: [UnsafeRawPointer] = []
            for s in 0..<4 { expected += [UnsafeRawPointer(keys + head + s * span), UnsafeRawPointer(values + head + s * span)] }
            #expect(spans[0..<n].map { UnsafeRawPointer($0.start!) } == expected)
            #expect(spans[0..<n].allSatisfy { $0.bytes == span })
            // A float16 cache: half the bytes, twice the spans within the budget (up to CHK_HINT_SPANS).
            let halves = Int(chk_attention_hint(keys, values, capacity, 940, kvHeads, headDim, 1, 2, 1, 256 << 10, &spans))
            let thirdKeys = UnsafeRawPointer(keys + head / 2 + span / 2)
            #expect(halves == 16 && spans[0].bytes == span / 2 && UnsafeRawPointer(spans[2].start!) == thirdKeys)
        }

        /// A decoded token's attention over a float16 cache (read in place by the kernels' float16
        /// variants) gives the same bits as over a float32 cache holding the same rounded keys and
        /// values: widening is exact, and the arithmetic is the same. Shapes: Qwen2's groups of 7
        /// with 64-wide heads, TinyLlama's of 8, 80-wide heads (64 columns, then a block of 16),
        /// a last key panel cut short, one span and several.
        @Test(arguments: [(14, 2, 64, 200), (32, 4, 64, 75), (8, 2, 80, 130), (4, 1, 64, 33), (7, 1, 64, 1000)])
        func float16CacheAttentionEqualsFloat32OfTheSameValues(heads: Int, kvHeads: Int, headDim: Int, keys: Int) {
            let width = kvHeads * headDim
            let k = Self.random([keys + 1, width], seed: 21), v = Self.random([keys + 1, width], seed: 22)
            for t in [k, v] { for i in 0..<t.count { t.data[i] = Float(Float16(t.data[i])) } }  // already float16 values
            let q = Self.random([1, heads * headDim], seed: 23)
            var outputs: [[Float]] = []
            for precision in [KVPrecision.f16, .f32] {
                let cache = LayerKVCache(capacity: keys + 1, kvHeads: kvHeads, headDim: headDim, precision: precision)
                cache.append(keys: k.rows(0..<keys), values: v.rows(0..<keys))
                cache.append(keys: k.rows(keys..<(keys + 1)), values: v.rows(keys..<(keys + 1)))
                let out = Tensor(zeros: [1, heads * headDim])
                cachedAttention(queries: q, cache: cache, heads: heads, start: keys, workspace: Workspace(), into: out)
                outputs.append(out.toArray())
            }
            #expect(outputs[0] == outputs[1], "\(heads)/\(kvHeads) heads of \(headDim) over \(keys + 1) keys")
            #expect(outputs[0].allSatisfy(\.isFinite) && outputs[0].contains { $0 != 0 })
        }

        /// Layer caches laid end to end in one block of huge pages hold and attend exactly as caches
        /// of their own: each layer filled with its own keys and values (two appends, the last key
        /// panel cut short) gives them back and the same attention bits, so no layer's storage
        /// overlaps another's. Unasked, the block is taken from a huge page's worth of caches up.
        @Test(arguments: KVPrecision.allCases)
        func layerCachesInOneBlockEqualCachesOfTheirOwn(precision: KVPrecision) {
            let layers = 3, heads = 14, kvHeads = 2, headDim = 64, keys = 70, width = kvHeads * headDim
            let q = Self.random([1, heads * headDim], seed: 30)
            // The second layer's keys right after the first's values, as far from them as those from its keys.
            func sideBySide(_ first: LayerKVCache, _ second: LayerKVCache) -> Bool {
                second.keyPanels == first.valueRows + (first.valueRows - first.keyPanels)
            }
            var results: [[[Float]]] = []
            for oneBlock in [true, false] {
                let caches = LayerKVCache.layers(layers, capacity: keys, kvHeads: kvHeads, headDim: headDim, precision: precision,
                                                 oneBlock: oneBlock)
                #expect(sideBySide(caches[0], caches[1]) == oneBlock, "layers side by side in one block: \(oneBlock)")
                results.append(caches.enumerated().map { layer, cache in
                    let k = Self.random([keys, width], seed: UInt64(31 + 2 * layer)), v = Self.random([keys, width], seed: UInt64(32 + 2 * layer))
                    cache.append(keys: k.rows(0..<(keys - 5)), values: v.rows(0..<(keys - 5)))
                    cache.append(keys: k.rows((keys - 5)..<keys), values: v.rows((keys - 5)..<keys))
                    var keyRows = [Float](repeating: 0, count: keys * width), valueRows = keyRows
                    cache.rows(keys: &keyRows, values: &valueRows)
                    let stored = { (x: Tensor) in precision == .f16 ? x.toArray().map { Float(Float16($0)) } : x.toArray() }
                    #expect(keyRows == stored(k) && valueRows == stored(v), "layer \(layer) gives back its own keys and values")
                    let out = Tensor(zeros: [1, heads * headDim])
                    cachedAttention(queries: q, cache: cache, heads: heads, start: keys - 1, workspace: Workspace(), into: out)
                    return out.toArray()
                })
            }
            let equal = results[0] == results[1]
            #expect(equal, "every layer's attention the same in one block as in caches of their own")
            func firstTwoSideBySide(_ layers: Int, _ capacity: Int) -> Bool {
                let caches = LayerKVCache.layers(layers, capacity: capacity, kvHeads: kvHeads, headDim: headDim, precision: precision)
                return sideBySide(caches[0], caches[1])
            }
            #expect(!firstTwoSideBySide(2, 64), "a few KiB of caches: heap memory each")
            #expect(firstTwoSideBySide(24, 1024), "24 layers of 1024 positions: one block")
        }

        @Test func decodeAttentionEqualsTheGeneralPath() {
            // One query over 37 cached keys, grouped-query (8 heads over 2 KV heads).
            let heads = 8, kvHeads = 2, headDim = 16, keys = 37
            let q = Self.random([1, heads * headDim], seed: 7)
            let k = Self.random([keys, kvHeads * headDim], seed: 8), v = Self.random([keys, kvHeads * headDim], seed: 9)
            let fast = multiHeadAttention(queries: q, keys: k.data, values: v.data, keyCount: keys, heads: heads, kvHeads: kvHeads,
                                          headDim: headDim, causalOffset: keys - 1)
            // Two identical query rows take the sgemm path; the second row is position keys - 1 too.
            let twice = Tensor(zeros: [2, heads * headDim])
            twice.data.update(from: q.data, count: q.count); (twice.data + q.count).update(from: q.data, count: q.count)
            let general = multiHeadAttention(queries: twice, keys: k.data, values: v.data, keyCount: keys, heads: heads, kvHeads: kvHeads,
                                             headDim: headDim, causalOffset: keys - 2)
            #expect(Self.worst(fast.toArray(), Array(general.toArray()[q.count...])) < 1e-5)
        }

        // Every tail of the SIMD kernels: rows 1-9 (groups of four and the leftover rows) and block
        // counts that leave whole groups of eight, a leftover four (q4_0), leftover pairs (q8_0) and
        // odd blocks (1, 3, 7, 10, 19, 28 blocks);
        // float formats also get a width that is not a multiple of 16 (masked loads).
        // The AVX2 kernels run too (forced), as on a CPU without AVX-512, and the AVX-512 q4_0 and q6_0 kernels
        // without GFNI (forced off; where this CPU has no GFNI the chosen kernels already are that),
        // and the AVX-512 kernels a row a pass and four rows a pass (AMD's and Intel's choice).
        @Test(arguments: WeightFormat.allCases, ["chosen", "avx2", "no-gfni", "one-row", "four-rows"])
        func simdKernelsAgreeWithPortableOnEveryTail(format: WeightFormat, variant: String) throws {
            let widths = format.isQuantized ? [32, 96, 224, 320, 608, 896] : [47, 96, 320, 608]
            for columns in widths {
                for rows in [1, 3, 4, 5, 9] {
                    let m = try WeightMatrix.converting(Self.random([rows, columns], seed: UInt64(rows * 1000 + columns)), to: format)
                    let x = Self.random([1, columns], seed: UInt64(columns))
                    let simd = Tensor(zeros: [1, rows]), portable = Tensor(zeros: [1, rows])
                    if variant == "avx2" {
                        try #require(chk_force_avx2(1) != 0, "this CPU has no AVX2")
                        #expect(String(cString: chk_kernel_variant()) == "avx2")
                    }
                    if variant == "no-gfni" { _ = chk_force_no_gfni(1) }
                    if variant == "one-row" || variant == "four-rows" {
                        chk_force_decode_rows(variant == "one-row" ? 1 : 4)
                        #expect(chk_decode_rows_per_pass() == (variant == "one-row" ? 1 : 4))
                    }
                    m.apply(x, bias: nil, into: simd)
                    if variant == "avx2" { _ = chk_force_avx2(0) }
                    if variant == "no-gfni" { _ = chk_force_no_gfni(0) }
                    chk_force_decode_rows(0)
                    chk_force_portable(1)
                    m.apply(x, bias: nil, into: portable)
                    chk_force_portable(0)
                    // Both sum the same products (int8 products exactly); only the float summation order differs.
                    #expect(Self.worst(simd.toArray(), portable.toArray()) < 1e-4 * Float(columns).squareRoot(),
                            "\(format) \(rows)×\(columns)")
                }
            }
        }

        /// The quantized activation (int8 blocks, their scales and the kernels' other forms) is the same on every kernel
        /// variant: a random row, a block of halfway ties (amax 127: scale 1), zeros, and a width with
        /// a block past the last whole four.
        @Test func activationQuantizationIsTheSameOnEveryVariant() throws {
            let n = 896 + 32
            var x = Self.random([1, n], seed: 41).toArray()
            for i in 0..<31 { x[i] = Float(i - 15) + 0.5 }
            x[31] = 127
            for i in 64..<96 { x[i] = 0 }
            func prepare() -> [Float] {
                var buffer = [UInt8](repeating: 0, count: chk_qx_bytes(n))
                return buffer.withUnsafeMutableBytes { raw in
                    let qx = x.withUnsafeBufferPointer { chk_prepare_qx($0.baseAddress, n, raw.baseAddress) }
                    // xq and its scales, then the VNNI/AVX2 forms: x4 (whole fours), c8 (whole pairs), c4
                    return (0..<n).map { Float(qx.xq[$0]) } + (0..<(n / 32)).map { qx.xs[$0] } + (0..<(n / 128 * 128)).map { Float(qx.x4[$0]) }
                        + (0..<(n / 64 * 16)).map { Float(qx.c8[$0]) } + (0..<(n / 128 * 16)).map { Float(qx.c4[$0]) }
                }
            }
            chk_force_portable(1)
            let portable = prepare()
            chk_force_portable(0)
            try #require(chk_force_avx2(1) != 0, "this CPU has no AVX2")
            let avx2 = prepare()
            _ = chk_force_avx2(0)
            #expect(avx2 == portable)
            #expect(prepare() == portable)
            #expect(portable[0] == -14 && portable[1] == -14 && portable[2] == -12)  // −14.5, −13.5, −12.5 to even
        }

        @Test(arguments: WeightFormat.allCases) func threadedProductEqualsOneThread(format: WeightFormat) throws {
            let rows = 203, columns = 256
            let m = try WeightMatrix.converting(Self.random([rows, columns], seed: 21), to: format)
            let x = Self.random([1, columns], seed: 22)
            var one = [Float](repeating: 0, count: rows), three = one
            let kind: chk_format = [.f32: CHK_F32, .f16: CHK_F16, .bf16: CHK_BF16, .q8_0: CHK_Q8_0, .q6_0: CHK_Q6_0, .q4_0: CHK_Q4_0][format]!
            chk_matvec(kind, m.data, m.scales, x.data, &one, rows, columns, 1)
            chk_matvec(kind, m.data, m.scales, x.data, &three, rows, columns, 3)
            // Chunks start at multiples of four rows, so every row is computed by the same code either way.
            #expect(one == three)
            #expect(one.allSatisfy { $0 != 0 })
        }

        @Test func parallelRowsCoverEveryRowOnceFromConcurrentCallers() {
            let rows = 1000, callers = 4
            let counts = UnsafeMutablePointer<Int32>.allocate(capacity: rows * callers)
            counts.initialize(repeating: 0, count: rows * callers)
            defer { counts.deallocate() }
            nonisolated(unsafe) let shared = counts
            // Concurrent callers: one gets the pool, the others run serially; a nested call runs serially.
            DispatchQueue.concurrentPerform(iterations: callers) { c in
                ParallelRows.run(rows, minimumPerThread: 1) { a, b in
                    for r in a..<b { shared[c * rows + r] += 1 }
                    if a == 0 { ParallelRows.run(4, minimumPerThread: 1) { _, _ in } }
                }
            }
            #expect((0..<rows * callers).allSatisfy { counts[$0] == 1 })
        }

        @Test func rangeClaimsCoverEveryRowOnceInWholeChunksWithinOneShare() {
            for threads in [2, 3, 100] {  // 100: above the pool's cap of 64
                for (rows, chunk) in [(1000, 16), (203, 16), (17, 16), (11264, 16), (5, 4), (3, 16)] {
                    var seen = [Int32](repeating: 0, count: rows)
                    var claims: [(begin: Int, end: Int)] = []
                    let lock = NSLock()
                    seen.withUnsafeMutableBufferPointer { counts in
                        nonisolated(unsafe) let shared = counts
                        var body: (Int, Int) -> Void = { begin, end in
                            for r in begin..<end { shared[r] += 1 }
                            lock.lock(); claims.append((begin, end)); lock.unlock()
                        }
                        withUnsafeMutablePointer(to: &body) { pointer in
                            chk_parallel_for_ranges(rows, chunk, Int32(threads), { context, begin, end in
                                context!.assumingMemoryBound(to: ((Int, Int) -> Void).self).pointee(begin, end)
                            }, pointer)
                        }
                    }
                    #expect(seen.allSatisfy { $0 == 1 }, "\(rows) rows, \(threads) threads")
                    // Every claim but the one that ends the rows is whole chunks.
                    #expect(claims.allSatisfy { $0.end == rows || ($0.end - $0.begin) % chunk == 0 }, "\(rows) rows: \(claims)")
                    // Each claim lies within one thread's share (shares start at t·chunks/threads).
                    let chunks = (rows + chunk - 1) / chunk
                    let participants = min(threads, 64)  // the pool's cap
                    let shareStarts = (0...participants).map { $0 * chunks / participants }
                    #expect(claims.allSatisfy { claim in  // the share holding its first chunk ends after its last
                        let shareEnd = shareStarts.first { $0 > claim.begin / chunk }
                        return shareEnd.map { $0 > (claim.end - 1) / chunk } ?? false
                    }, "\(rows) rows: \(claims)")
                    // Shares are claimed in pieces (a quarter of what is left), neither whole nor chunk by chunk.
                    if chunks >= 16 * threads {
                        #expect(claims.count > 2 * threads && claims.count < chunks * 3 / 4, "\(rows) rows: \(claims.count) claims")
                    }
                }
            }
        }
    }
}
