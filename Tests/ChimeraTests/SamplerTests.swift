import ChimeraTensor
import Foundation
import Testing
@testable import Chimera

/// Sampling against the distribution it is defined to draw from: softmax(logits / temperature),
/// cut to the top k, then to the fewest most probable tokens whose probabilities reach top-p
/// (renormalized after each cut). Seeded, so each check sees the same draws every run.
@Suite struct SamplerTests {
    // Six token ids; the last row of the logits is the one sampled (the first is noise).
    static let logits: [Float] = [2, 1, 0.5, 0, -1, 3]

    /// The expected probabilities, computed here in double precision.
    static func expected(temperature: Double, topK: Int? = nil, topP: Double? = nil) -> [Double] {
        let order = logits.indices.sorted { logits[$0] > logits[$1] }
        var kept = Array(order.prefix(topK ?? order.count))
        var weights = [Double](repeating: 0, count: logits.count)
        for i in kept { weights[i] = exp(Double(logits[i]) / temperature) }
        if let p = topP {
            let total = kept.reduce(0) { $0 + weights[$1] }
            var reached = 0.0, count = 0
            for i in kept { count += 1; reached += weights[i] / total; if reached >= p { break } }
            kept = Array(kept.prefix(count))
        }
        let total = kept.reduce(0) { $0 + weights[$1] }
        return logits.indices.map { kept.contains($0) ? weights[$0] / total : 0 }
    }

    static func frequencies(_ options: GenerationOptions, draws: Int = 40_000) -> [Double] {
        let tensor = Tensor(shape: [2, logits.count], values: [9, 9, 9, 9, 9, -9] + logits)
        var sampler = Sampler(options: options)
        var counts = [Int](repeating: 0, count: logits.count)
        for _ in 0..<draws { counts[sampler.sample(tensor)] += 1 }
        return counts.map { Double($0) / Double(draws) }
    }

    // Top-p 0.8 keeps two ids (0.605 + 0.2225 crosses 0.8); top-k 4 then top-p 0.9 keeps three.
    @Test(arguments: [(0.7, nil, nil), (1.0, 3, nil), (1.0, nil, 0.8), (1.3, 4, 0.9), (1.0, 6, 0.999)] as [(Double, Int?, Double?)])
    func drawsFollowTheDistribution(temperature: Double, topK: Int?, topP: Double?) {
        let options = GenerationOptions(temperature: Float(temperature), topK: topK, topP: topP.map { Float($0) }, seed: 11)
        let seen = Self.frequencies(options), want = Self.expected(temperature: temperature, topK: topK, topP: topP)
        for i in want.indices {
            // 40,000 draws: a standard deviation of at most 0.0025.
            if want[i] == 0 { #expect(seen[i] == 0, "token \(i) is outside the kept set") }
            else { #expect(abs(seen[i] - want[i]) < 0.01, "token \(i): drawn \(seen[i]), expected \(want[i])") }
        }
    }

    /// A top-k of the vocabulary or more keeps every token: the same draws as without one, and no
    /// buffer sized by k (--top-k 99999999999 asked for 1.6 TB and aborted).
    @Test(arguments: [6, 1 << 40, Int.max]) func topKOfTheVocabularyOrMoreKeepsEveryToken(k: Int) {
        let tensor = Tensor(shape: [1, Self.logits.count], values: Self.logits)
        var withK = Sampler(options: GenerationOptions(temperature: 1, topK: k, seed: 5))
        var without = Sampler(options: GenerationOptions(temperature: 1, seed: 5))
        #expect((0..<200).map { _ in withK.sample(tensor) } == (0..<200).map { _ in without.sample(tensor) })
    }

    @Test func sameSeedSameDrawsAndAVocabularyOfQwen2sSize() {
        // 151,936 logits: ids drawn with top-p 0.5 are among the fewest most probable reaching it.
        var g = SplitMix64(seed: 4)
        let values = (0..<151_936).map { _ in g.uniform(8) }
        let tensor = Tensor(shape: [1, values.count], values: values)
        let options = GenerationOptions(temperature: 0.5, topP: 0.5, seed: 2)
        var a = Sampler(options: options), b = Sampler(options: options)
        let drawsA = (0..<50).map { _ in a.sample(tensor) }, drawsB = (0..<50).map { _ in b.sample(tensor) }
        #expect(drawsA == drawsB)
        let weights = values.map { exp(Double($0) / 0.5) }, total = weights.reduce(0, +)
        var reached = 0.0, nucleus = Set<Int>()
        for i in values.indices.sorted(by: { values[$0] > values[$1] }) {
            nucleus.insert(i); reached += weights[i] / total
            if reached >= 0.5 { break }
        }
        #expect(nucleus.count > 1)
        #expect(drawsA.allSatisfy { nucleus.contains($0) })
        #expect(Set(drawsA).count > 1)
    }

    /// A seen token's logit is divided by the penalty (multiplied when negative) before anything is
    /// chosen, greedy or sampled, and a token the sampler returned counts as seen from then on.
    @Test func repetitionPenaltyLowersSeenTokens() throws {
        // logits 2, 1, 0.5, 0, -1, 3; id 5 (3) and id 0 (2) seen, penalty 4: 0.5 and 0.75 — id 1 (1) wins.
        var greedy = Sampler(options: GenerationOptions(temperature: 0, repetitionPenalty: 4))
        greedy.saw([5, 0, -1])  // a placeholder position (-1) is no token
        let tensor = { Tensor(shape: [1, Self.logits.count], values: Self.logits) }
        #expect(greedy.sample(tensor()) == 1)
        // Now 1 is seen too (0.25): 0.75 of id 5 wins, then 0.5 of ids 0 and 2 tie and the first wins.
        #expect(greedy.sample(tensor()) == 5)
        let penalized = tensor()
        _ = greedy.sample(penalized)
        #expect(Array(penalized.toArray()) == [0.5, 0.25, 0.5, 0, -1, 0.75])  // ids 5, 0 and 1 penalized in place
        // Sampling draws from the penalized logits: at temperature 1 with top-k 1, always their argmax.
        var sampled = Sampler(options: GenerationOptions(temperature: 1, topK: 1, repetitionPenalty: 4, seed: 3))
        sampled.saw([5, 0])
        #expect(sampled.sample(tensor()) == 1)
        // Penalty 1 (or none) leaves the logits alone.
        var none = Sampler(options: GenerationOptions(temperature: 0, repetitionPenalty: 1))
        none.saw([5])
        #expect(none.sample(tensor()) == 5)
        #expect(throws: PromptError.self) { try GenerationOptions(repetitionPenalty: 0).validate() }
        #expect(throws: PromptError.self) { try GenerationOptions(repetitionPenalty: .nan).validate() }
    }

    @Test func topKKeepsEveryTokenTiedWithTheKth() {
        // transformers' top-k keeps every token at least as likely as the k-th: three share the top.
        let tensor = Tensor(shape: [1, 5], values: [2, 2, 0, 2, -1])
        var sampler = Sampler(options: GenerationOptions(temperature: 1, topK: 1, seed: 5))
        var counts = [Int](repeating: 0, count: 5)
        for _ in 0..<3000 { counts[sampler.sample(tensor)] += 1 }
        #expect(counts[2] == 0 && counts[4] == 0)
        for i in [0, 1, 3] { #expect(abs(Double(counts[i]) / 3000 - 1.0 / 3) < 0.04, "token \(i): \(counts[i]) of 3000") }
    }

    @Test func aPeakedVocabularyKeepsItsFewLikelyTokens() {
        // 151,936 logits as a trained model gives them: a few likely tokens, a long tail. Top-k 3
        // and top-p 0.9 both keep only the likely ones, in their proportions.
        var g = SplitMix64(seed: 9)
        var values = (0..<151_936).map { _ in g.uniform(3) - 12 }  // the tail: 0.4 % of the mass
        values[70_000] = 6; values[12] = 5; values[151_935] = 5; values[3] = 1
        let tensor = Tensor(shape: [1, values.count], values: values)
        let e = [6.0, 5, 5].map { exp($0) }, top3 = e.reduce(0, +)
        for options in [GenerationOptions(temperature: 1, topK: 3, seed: 1), GenerationOptions(temperature: 1, topP: 0.9, seed: 1)] {
            var sampler = Sampler(options: options)
            var counts: [Int: Int] = [:]
            for _ in 0..<4000 { counts[sampler.sample(tensor), default: 0] += 1 }
            #expect(Set(counts.keys).isSubset(of: [70_000, 12, 151_935]), "\(options.samplingDescription): drew \(counts.keys.sorted())")
            for (id, weight) in zip([70_000, 12, 151_935], e) {
                #expect(abs(Double(counts[id] ?? 0) / 4000 - weight / top3) < 0.03, "\(options.samplingDescription): token \(id)")
            }
        }
    }
}
