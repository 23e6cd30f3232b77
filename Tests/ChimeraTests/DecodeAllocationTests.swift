import CAllocationCounter
import ChimeraComponents
import ChimeraTensor
import Testing
@testable import Chimera

/// Decoding allocates nothing per token: the KV cache is made once, the layers' activations live in
/// the workspace kept with it, the kernels' scratch is per thread and only grows. Counted on the test's
/// thread (the caller of every product, attention and sampling step) with the test executable's
/// counting malloc (Tests/CAllocationCounter).
@Suite struct DecodeAllocationTests {
    static let cases: [(fixture: String, format: WeightFormat, kvCache: KVPrecision)] = [
        ("lm-llama", .f32, .f32), ("lm-llama", .q4_0, .f16), ("lm-qwen2", .f16, .f32), ("lm-qwen2", .q8_0, .f16),
        ("lm-gemma", .bf16, .f32), ("lm-phi", .q4_0, .f32),
        // Dynamic rotary scaling past its original context (16): new frequencies every token.
        ("lm-llama-dynamic", .f32, .f32),
    ]

    @Test(arguments: cases) func decodingAllocatesNothingPerToken(fixture: String, format: WeightFormat, kvCache: KVPrecision) throws {
        let (_, manifest, _) = try LanguageModelFixture(fixture).importAndBuild()
        let weights = try #require(manifest.weights)
        let loader = ParameterLoader(source: .random(seed: 3, scale: 0.1), reference: weights, matrixFormat: format)
        let family = try #require(BuiltinFamilies.registry().families[manifest.family])
        let model = try #require(try family.create(manifest, ComponentBuildContext(weights: loader)) as? any LanguageModel)
        let warmUp = 8, measured = 48
        let cache = model.makeCache(capacity: 6 + warmUp + measured, precision: kvCache)
        let prompt = [1, 5, 9, 13, 17, 21]
        var logits = try model.forward(embeddings: try model.embed(prompt), cache: cache, lastOnly: true)
        // One case with a repetition penalty: its list of seen tokens is sized on the first token.
        var sampler = Sampler(options: GenerationOptions(maxTokens: warmUp + measured, temperature: 0,
                                                         repetitionPenalty: fixture == "lm-phi" ? 1.3 : nil))
        sampler.saw(prompt)
        let row = Tensor(zeros: [1, model.hiddenSize])
        var before = 0
        for step in 0..<(warmUp + measured) {
            if step == warmUp { before = chimera_thread_allocations() }
            try model.embed(token: sampler.sample(logits), into: row)
            logits = try model.forward(embeddings: row, cache: cache, lastOnly: true)
        }
        let allocations = chimera_thread_allocations() - before
        // Scratch that grows with the cached positions may double a few times; one allocation per
        // token (or per layer per token) would be 48 or more.
        #expect(allocations < 8, "\(allocations) allocations over \(measured) decoded tokens (\(fixture), \(format), KV \(kvCache))")
        #expect(logits.toArray().allSatisfy { $0.isFinite })
    }
}
