import CChimeraKernels
import Foundation
import Testing
@testable import ChimeraTensor

/// The sampler's numeric half (Sampling.swift and its kernels) against brute-force references:
/// sorted values for the cuts, exact counts for the draws.
@Suite struct SamplingTests {
    /// Weights of several shapes: nearly flat (a random model's logits), peaked (a trained model's),
    /// with runs of exactly equal values and zeros (underflowed weights), at a vocabulary's size and
    /// at sizes around the vector width.
    static func weights(_ shape: Int, count: Int, seed: UInt64) -> [Float] {
        var g = SplitMix64(seed: seed)
        return (0..<count).map { i in
            switch shape {
            case 0: return exp(-0.05 * Float(g.unit()))                      // flat
            case 1: let u = Float(g.unit()); return exp(-30 * u * u)         // peaked, a long tail
            case 2: return [1, 0.5, 0.5, 0.25, 0][Int(g.next() % 5)]         // ties and zeros
            default: return i % 97 == 0 ? 1 : exp(-10 - 20 * Float(g.unit())) // a few far above the rest
            }
        }
    }

    /// Which indices a cut keeps: every value above the threshold, then the first `ties` equal to it.
    static func kept(_ values: [Float], _ cut: WeightCut) -> Set<Int> {
        var ties = cut.ties, kept = Set<Int>()
        for (i, v) in values.enumerated() {
            if v > cut.threshold { kept.insert(i) }
            else if v == cut.threshold && ties > 0 { kept.insert(i); if cut.ties != .max { ties -= 1 } }
        }
        return kept
    }

    /// The values' indices largest first, ties in index order.
    static func order(_ values: [Float]) -> [Int] {
        values.indices.sorted { values[$0] > values[$1] || (values[$0] == values[$1] && $0 < $1) }
    }

    @Test(arguments: [0, 1, 2, 3]) func cutsKeepTheFewestLargestThatMeetTheNeed(_ shape: Int) {
        for count in [1, 15, 16, 17, 1000, 5000, 151_936] {
            let values = Self.weights(shape, count: count, seed: UInt64(count * 4 + shape))
            let order = Self.order(values)
            var scratch = [Float](repeating: .nan, count: count)
            let total = values.reduce(0.0) { $0 + Double($1) }
            let needs: [CutNeed] = [1, 40, count / 3, count].filter { $0 >= 1 }.map { .count($0) }
                + [0.001, 0.5, 0.9, 0.999].map { .sum(Float(total * $0)) }
            // Each need with the values' sum tallied by the cut, and given by the caller.
            for need in needs {
                for given in [nil, Float(total)] {
                    let cut = values.withUnsafeBufferPointer { v in
                        scratch.withUnsafeMutableBufferPointer {
                            largestCut(v.baseAddress!, count: count, largest: 1, total: given, scratch: $0.baseAddress!, need: need)
                        }
                    }
                    let got = Self.kept(values, cut)
                    // The kept ones are the first of the order (the largest, ties in index order) ...
                    #expect(got == Set(order.prefix(got.count)), "shape \(shape), \(count) values, \(need): not the largest")
                    // ... as few as meet the need: exactly for a count; for a sum, up to the rounding of
                    // float sums over the vocabulary (the cut sums in float, in its own order).
                    switch need {
                    case .count(let k): #expect(got.count == min(k, count), "shape \(shape), \(count) values, top \(k): kept \(got.count)")
                    case .sum(let target):
                        let tolerance = 1e-4 * total
                        let sum = order.prefix(got.count).reduce(0.0) { $0 + Double(values[$1]) }
                        let lessOne = sum - Double(values[order[max(got.count - 1, 0)]])
                        #expect(sum >= Double(target) - tolerance, "shape \(shape), \(count) values, sum \(target): kept \(sum)")
                        #expect(lessOne < Double(target) + tolerance, "shape \(shape), \(count) values, sum \(target): one fewer already \(lessOne)")
                    }
                }
            }
        }
    }

    @Test func aNeedNoValuesMeetKeepsEveryValue() {
        let values: [Float] = [0.5, 1, 0.25]
        var scratch = [Float](repeating: 0, count: 3)
        let cut = largestCut(values, count: 3, largest: 1, scratch: &scratch, need: .count(4))
        #expect(cut == .all)
        #expect(Self.kept(values, cut) == [0, 1, 2])
    }

    /// Draws with a fixed sequence of uniforms: each index is drawn in proportion to its value
    /// among the kept ones, and never outside them.
    func frequencies(_ values: [Float], _ cut: WeightCut, draws: Int = 20_000) -> [Double] {
        var counts = [Int](repeating: 0, count: values.count)
        for d in 0..<draws {
            let draw = (Float(d) + 0.5) / Float(draws)
            guard let i = drawIndex(values, count: values.count, cut: cut, draw: draw) else { Issue.record("no index drawn"); continue }
            counts[i] += 1
        }
        return counts.map { Double($0) / Double(draws) }
    }

    @Test func drawsFollowTheKeptValuesInIndexOrder() {
        // Across several 1024-value blocks: kept values scattered, ties at the threshold of which
        // only the first three count.
        var values = [Float](repeating: 0.1, count: 5000)
        for (i, v) in [(7, 4), (1500, 2), (2047, 1), (2048, 1), (3000, 1), (3001, 1), (3002, 3), (4999, 2)] as [(Int, Float)] { values[i] = v }
        let cut = WeightCut(threshold: 1, ties: 3)
        let kept: [Int: Double] = [7: 4, 1500: 2, 2047: 1, 2048: 1, 3000: 1, 3002: 3, 4999: 2]
        let seen = frequencies(values, cut)
        let total = kept.values.reduce(0, +)  // 3000's tie is the third and last kept; 3001's is not
        for (i, f) in seen.enumerated() {
            let want = (kept[i] ?? 0) / total
            #expect(abs(f - want) < 0.001, "index \(i): drawn \(f), expected \(want)")
        }
        // Every value (the inclusive cut): the last index's share follows its value too.
        let everything = frequencies([1, 3], .all)
        #expect(abs(everything[0] - 0.25) < 0.001 && abs(everything[1] - 0.75) < 0.001)
    }

    @Test func drawsFromNothingAreNil() {
        #expect(drawIndex([0, 0, 0], count: 3, cut: .all, draw: 0.5) == nil)
        #expect(drawIndex([.nan, .nan], count: 2, cut: .all, draw: 0.5) == nil)
        #expect(drawIndex([1, 0.5], count: 2, cut: WeightCut(threshold: 1, ties: 0), draw: 0.5) == nil)
    }

    @Test func kernelsAgreeWithTheScalarReferenceInEveryVariant() {
        for variant in ElementwiseKernelTests.variants {
            #expect(chk_elementwise_use(variant) == 1)
            defer { chk_elementwise_use(nil) }
            for n in [1, 7, 16, 17, 63, 64, 65, 1000, 151_936] {
                var g = SplitMix64(seed: UInt64(n))
                var logits = (0..<n).map { _ in g.uniform(20) - 10 }
                if n > 20 { logits[n / 2] = .nan; logits[3] = -.infinity }
                var weights = [Float](repeating: 0, count: n)
                let top = logits.filter { !$0.isNaN }.max()!
                let sum = chk_sampling_weights(logits, n, top, 1 / 0.7, &weights)
                var want = 0.0
                for i in 0..<n where !logits[i].isNaN {
                    let argument = (Double(logits[i]) - Double(top)) / 0.7, w = exp(argument)
                    want += w
                    // A few ulps of exp, plus the float rounding of its argument (an ulp of it is a
                    // relative error of the result as large as the argument times 6e-8).
                    if w == 0 { #expect(weights[i] == 0, "\(variant), n \(n): a -inf logit's weight"); continue }
                    #expect(abs(Double(weights[i]) - w) <= (1e-6 + 2e-7 * abs(argument)) * w, "\(variant), n \(n), index \(i)")
                }
                if n <= 20 { #expect(abs(Double(sum) - want) <= 1e-5 * want, "\(variant), n \(n): sum") }
                for floor: Float in [0, 0.001, 0.5, 1, 2] {
                    let expected = weights.filter { $0 >= floor }  // NaN compares false: skipped
                    var count = 0
                    let mass = chk_tally_at_least(weights, n, floor, &count)
                    #expect(count == expected.count, "\(variant), n \(n), floor \(floor): count")
                    #expect(abs(Double(mass) - expected.reduce(0) { $0 + Double($1) }) <= 1e-4 * max(Double(mass), 1), "\(variant), n \(n), floor \(floor): mass")
                    var out = [Float](repeating: 0, count: n), ids = [Int32](repeating: -1, count: n)
                    let hi: Float = floor == 0 ? 0.5 : .infinity
                    let m = chk_gather_range(weights, n, floor, hi, &out, &ids)
                    let wantIDs = weights.indices.filter { weights[$0] >= floor && weights[$0] < hi }
                    #expect(m == wantIDs.count && Array(ids.prefix(m)) == wantIDs.map(Int32.init), "\(variant), n \(n), [\(floor), \(hi)): ids")
                    #expect(Array(out.prefix(m)) == wantIDs.map { weights[$0] }, "\(variant), n \(n), [\(floor), \(hi)): values")
                }
            }
        }
    }

    @Test func topKFloorIsTheKthLargestInEveryVariant() {
        for variant in ElementwiseKernelTests.variants {
            #expect(chk_elementwise_use(variant) == 1)
            defer { chk_elementwise_use(nil) }
            for n in [1, 5, 16, 17, 1000, 4000, 151_936] {
                var g = SplitMix64(seed: UInt64(n) + 77)
                // Logits with runs of equal values (ties at the floor), a NaN and -inf ones.
                var logits = (0..<n).map { _ in (g.uniform(8) * 4).rounded() / 4 }
                if n > 16 { logits[n - 2] = .nan; logits[1] = -.infinity; logits[n / 3] = 40 }
                let sorted = logits.filter { !$0.isNaN && $0 > -.infinity }.sorted(by: >)
                for k in [1, 2, 40, 300, 1025, n] {
                    var buffer = [Float](repeating: 0, count: topKBufferCount(k))
                    let floor = chk_top_k_floor(logits, n, k, &buffer)
                    let want = k <= sorted.count ? sorted[k - 1] : -.infinity
                    #expect(floor == want, "\(variant), n \(n), k \(k): \(floor), expected \(want)")
                }
            }
            // Many small random cases: every k, partitions that end on every side of the k-th.
            var g = SplitMix64(seed: 5)
            for trial in 0..<300 {
                let n = 1 + Int(g.next() % 3000), k = 1 + Int(g.next() % UInt64(n)), levels = 1 + Int(g.next() % 50)
                let logits = (0..<n).map { _ in Float(g.next() % UInt64(levels)) }
                var buffer = [Float](repeating: 0, count: topKBufferCount(k))
                let floor = chk_top_k_floor(logits, n, k, &buffer)
                #expect(floor == logits.sorted(by: >)[k - 1], "\(variant), trial \(trial): n \(n), k \(k), \(levels) levels")
            }
        }
    }
}
