import ChimeraTensor
import Foundation

/// How well a language model predicts a text: transformers' causal-LM loss (the mean negative
/// log-likelihood of each token given those before it) and its exponential, the perplexity — the
/// usual measure of what quantizing or fine-tuning a model cost (llama.cpp's `perplexity`).
public struct PerplexityResult: Codable, Sendable {
    public var perplexity: Double
    /// Nats a predicted token, averaged over every window's predictions.
    public var meanNLL: Double
    /// Tokens predicted: each window's tokens but its first.
    public var predictions: Int
    /// The text's tokens, and how many of them the windows hold (fewer with `maxWindows`; each
    /// window's first is read, not predicted).
    public var textTokens: Int
    public var windowTokens: Int
    public var window: Int
    /// Tokens from one window's start to the next (`window` when they do not overlap).
    public var stride: Int
    public var windows: Int
    public var seconds: Double
    /// Tokens run through the model a second.
    public var tokensPerSecond: Double
    enum CodingKeys: String, CodingKey {
        case perplexity, predictions, window, stride, windows, seconds
        case meanNLL = "mean_nll", textTokens = "text_tokens", windowTokens = "window_tokens", tokensPerSecond = "tokens_per_s"
    }
}

public enum PerplexityError: LocalizedError, Equatable {
    case badWindow(window: Int, context: Int)
    case badStride(stride: Int, window: Int)
    case tooShort(tokens: Int)
    case tokenOutsideVocabulary(id: Int, vocabulary: Int)
    case nonFiniteLogits(model: String, position: Int)
    public var errorDescription: String? {
        switch self {
        case let .badWindow(window, context):
            if context < 2 { return "the language model's context of \(context) token leaves nothing to score (a window needs 2)" }
            return "--window must be 2...\(context) (the context length), found \(window)"
        case let .badStride(stride, window): return "--stride must be 1...\(window) (the window), found \(stride)"
        case let .tooShort(tokens): return "the text is \(tokens) token\(tokens == 1 ? "" : "s"): a perplexity needs at least 2 (one to predict from, one to predict)"
        case let .tokenOutsideVocabulary(id, vocabulary): return "token id \(id) of the text is outside the model's \(vocabulary) logits"
        case let .nonFiniteLogits(model, position):
            return "language model '\(model)' gave non-finite logits (NaN or infinity) at position \(position) of a window: its weights or"
                + " activations hold a NaN or overflow (a damaged checkpoint, or float16 weights out of range)"
        }
    }
}

/// The summed negative log-likelihood (nats) of tokens[scoredFrom...] each given the tokens before
/// it (the ones before `scoredFrom` are context only): one forward pass over tokens[..<count - 1]
/// from an empty cache, `chunk` positions at a time so that no more than [chunk, vocabulary] logits
/// are held, each target's log-probability read off its row's log-sum-exp. The window's start is
/// position 0 (as transformers' model(ids, labels=ids)).
public func negativeLogLikelihood(of tokens: [Int], model: any LanguageModel, cache: KVCache, chunk: Int = 256,
                                  scoredFrom: Int = 1) throws -> Double {
    guard tokens.count >= 2 else { throw PerplexityError.tooShort(tokens: tokens.count) }
    cache.reset()
    var total = 0.0
    var start = 0
    let inputs = tokens.count - 1
    let normalizers = UnsafeMutablePointer<Double>.allocate(capacity: max(1, chunk))
    defer { normalizers.deallocate() }
    while start < inputs {
        let end = min(start + max(1, chunk), inputs)
        let logits = try model.forward(embeddings: try model.embed(Array(tokens[start..<end])), cache: cache, lastOnly: false)
        let rows = end - start, vocabulary = logits.columns
        var targets: [Double] = []
        targets.reserveCapacity(rows)
        for r in 0..<rows {
            let target = tokens[start + r + 1], row = logits.data + r * vocabulary
            guard (0..<vocabulary).contains(target) else { throw PerplexityError.tokenOutsideVocabulary(id: target, vocabulary: vocabulary) }
            // The log-sum-exp passes over NaN columns: a row's argmax is its first NaN if it has one.
            guard row[argmax(row, count: vocabulary)].isFinite, row[target].isFinite else {
                throw PerplexityError.nonFiniteLogits(model: model.id, position: start + r)
            }
            targets.append(Double(row[target]))
        }
        logSumExpRowsInPlace(logits.data, rows: rows, columns: vocabulary, into: normalizers)
        for r in 0..<rows where start + r + 1 >= scoredFrom { total += normalizers[r] - targets[r] }
        start = end
    }
    return total
}

/// The window (default: the context length, at most 1024) and stride (default: the window) a
/// perplexity over a model of `context` positions uses, or the error naming the one out of range.
public func perplexityWindow(_ window: Int?, stride: Int?, context: Int) throws -> (window: Int, stride: Int) {
    let window = window ?? min(context, 1024)
    guard window >= 2 && window <= context else { throw PerplexityError.badWindow(window: window, context: context) }
    let stride = stride ?? window
    guard stride >= 1 && stride <= window else { throw PerplexityError.badStride(stride: stride, window: window) }
    return (window, stride)
}

extension AssembledModel {
    /// The language model's perplexity over `text`, tokenized as a prompt is (special tokens added),
    /// cut into windows of `window` tokens (the last one shorter; default: the context length, at
    /// most 1024), each run from an empty cache. Without a `stride` (or with the window's) they do
    /// not overlap and each scores every token but its first; with a shorter one a window starts
    /// every `stride` tokens and scores only the tokens no earlier window scored, the rest being
    /// context (transformers' strided evaluation: every token after the first is scored once, most
    /// with more context). `maxWindows` stops early. `progress(done, total)` after each window.
    public func perplexity(of text: String, window: Int? = nil, stride: Int? = nil, maxWindows: Int? = nil, kvCache: KVPrecision = .f32,
                           progress: (Int, Int) -> Void = { _, _ in }) throws -> PerplexityResult {
        let (window, step) = try perplexityWindow(window, stride: stride, context: languageModel.contextLength)
        let tokens = try tokenizer.encode(text)
        // (start, end, first position scored): each window scores from where the last one ended.
        var spans: [(start: Int, end: Int, scoredFrom: Int)] = []
        var previousEnd = 0
        for start in Swift.stride(from: 0, to: tokens.count, by: step) {
            let end = min(start + window, tokens.count)
            if end - start >= 2 && end > previousEnd { spans.append((start, end, max(1, previousEnd - start))) }
            previousEnd = end
            if end == tokens.count { break }
        }
        if let maxWindows { spans = Array(spans.prefix(max(0, maxWindows))) }
        guard !spans.isEmpty else { throw PerplexityError.tooShort(tokens: tokens.count) }
        let cache = languageModel.makeCache(capacity: window, precision: kvCache)
        let started = Date()
        var total = 0.0, predictions = 0, held = 0, run = 0
        for (i, span) in spans.enumerated() {
            let piece = Array(tokens[span.start..<span.end])
            total += try negativeLogLikelihood(of: piece, model: languageModel, cache: cache, scoredFrom: span.scoredFrom)
            predictions += piece.count - span.scoredFrom
            held += span.end - max(span.start, spans[..<i].last?.end ?? 0)
            run += piece.count - 1
            progress(i + 1, spans.count)
        }
        let seconds = Date().timeIntervalSince(started), mean = total / Double(predictions)
        return PerplexityResult(perplexity: exp(mean), meanNLL: mean, predictions: predictions, textTokens: tokens.count, windowTokens: held,
                                window: window, stride: step, windows: spans.count, seconds: seconds,
                                tokensPerSecond: seconds > 0 ? Double(run) / seconds : 0)
    }
}
