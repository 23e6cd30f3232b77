import ChimeraTensor
import Foundation

// The three kinds of parts a model is assembled from, as protocols that built-in families and
// plugins implement alike. Forward passes are functions of their inputs (the KV cache is passed
// in), and every weight is reachable by its full name through `parameters`, so that a trainer can
// freeze, update and save them.

public enum ComponentKind: String, Codable, Sendable, CaseIterable {
    case encoder
    case connector
    case languageModel = "language_model"

    public init(from decoder: Decoder) throws {
        let raw = try decoder.singleValueContainer().decode(String.self)
        guard let kind = Self(rawValue: raw) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription:
                "unknown kind '\(raw)' (kinds: \(Self.allCases.map(\.rawValue).joined(separator: ", ")))"))
        }
        self = kind
    }
}

/// Bounds on the sizes manifests declare, far above any small model's: a garbage size is refused
/// where it is read instead of overflowing a product of sizes or asking for terabytes later.
public enum SizeLimits {
    /// A token's width (hidden_size, connector widths).
    public static let width = 1 << 16
    /// Tokens of a sequence (context_length, an encoder's or connector's output tokens).
    public static let tokens = 1 << 24
    /// An MLP's intermediate width.
    public static let intermediate = 1 << 18
    /// Layers, or attention heads.
    public static let count = 1 << 10
    /// An attention head's dimensions.
    public static let headDim = 1 << 12
    /// A vocabulary.
    public static let vocabulary = 1 << 22
}

/// What a part produces: `tokens` rows of `width` features; `grid` when the rows are a 2-D patch grid.
public struct TokenContract: Codable, Sendable, Equatable {
    public var width: Int
    public var tokens: Int
    public var grid: [Int]?
    /// Whether the first token is a class token (informational; `select` decides what is kept).
    public var classToken: Bool?
    public init(width: Int, tokens: Int, grid: [Int]? = nil, classToken: Bool? = nil) {
        self.width = width
        self.tokens = tokens
        self.grid = grid
        self.classToken = classToken
    }

    enum CodingKeys: String, CodingKey, CaseIterable { case width, tokens, grid, classToken = "class_token" }

    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        width = try c.decode(Int.self, forKey: .width)
        tokens = try c.decode(Int.self, forKey: .tokens)
        grid = try c.decodeIfPresent([Int].self, forKey: .grid)
        classToken = try c.decodeIfPresent(Bool.self, forKey: .classToken)
        for (value, key, most) in [(width, CodingKeys.width, SizeLimits.width), (tokens, .tokens, SizeLimits.tokens)] where !(1...most).contains(value) {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath + [key],
                                                    debugDescription: "must be positive and at most \(most), found \(value)"))
        }
    }
}

public protocol Component: AnyObject, Sendable {
    var manifest: ComponentManifest { get }
    /// Every weight by its full name in the checkpoint it came from.
    var parameters: [(name: String, tensor: Tensor)] { get }
}

extension Component {
    public var id: String { manifest.id }
    public var parameterCount: Int { parameters.reduce(0) { $0 + $1.tensor.count } }
}

/// Turns one input (an image file, a sensor recording, ...) into feature tokens.
public protocol ModalityEncoder: Component {
    /// Number of hidden states `hiddenState(_:layer:)` can return: layers + 1 (index 0 = embeddings).
    var hiddenStateCount: Int { get }
    /// Rows and width of one hidden state, before any feature selection.
    var output: TokenContract { get }
    /// Reads a file of this modality into the encoder's input tensor (pixel values for images).
    func prepareInput(contentsOf url: URL) throws -> Tensor
    /// Hidden state `layer` (0 = embeddings, negative counts from the end) for one prepared input.
    func hiddenState(_ input: Tensor, layer: Int) throws -> Tensor
}

/// The index of hidden state `layer` among `count` (negative counts from the end), nil when out of range.
public func hiddenStateIndex(_ layer: Int, count: Int) -> Int? {
    let index = layer < 0 ? count + layer : layer
    return index >= 0 && index < count ? index : nil
}

/// Maps encoder features [N, inputWidth] to language-model embeddings [M, outputWidth].
public protocol Connector: Component {
    var inputWidth: Int { get }
    var outputWidth: Int { get }
    /// How many rows come out for `inputTokens` rows in (nil when that many cannot be taken).
    func outputTokens(forInputTokens inputTokens: Int) -> Int?
    func forward(_ features: Tensor) throws -> Tensor
}

/// Key/value memory of every layer, owned by whoever runs the model.
public final class KVCache: @unchecked Sendable {
    public let layers: [LayerKVCache]
    public let capacity: Int
    /// Scratch reused by every forward pass over this cache (no allocation per decoded token).
    public let workspace = Workspace()
    public init(layers: Int, capacity: Int, kvHeads: Int, headDim: Int, precision: KVPrecision = .f32) {
        self.capacity = capacity
        self.layers = LayerKVCache.layers(layers, capacity: capacity, kvHeads: kvHeads, headDim: headDim, precision: precision)
    }
    /// Bytes of keys and values held by every layer.
    public var bytes: Int { layers.reduce(0) { $0 + $1.bytes } }
    // Indexing rather than `first`: read every decoded token, and unoptimized builds allocate for `first`.
    public var length: Int { layers.isEmpty ? 0 : layers[0].length }
    public func reset() { layers.forEach { $0.reset() } }
    public func truncate(to positions: Int) { layers.forEach { $0.truncate(to: positions) } }
}

public protocol LanguageModel: Component {
    var hiddenSize: Int { get }
    var vocabularySize: Int { get }
    var contextLength: Int { get }
    /// Raw token embeddings [T, hiddenSize]; any input scaling happens in `forward`, so that
    /// spliced features are scaled the same way (Gemma).
    func embed(_ tokens: [Int]) throws -> Tensor
    /// A cache for `capacity` positions (at most the context length), keys and values kept in `precision`.
    func makeCache(capacity: Int, precision: KVPrecision) -> KVCache
    /// The cache's layers and the width of each layer's keys (and of its values): what a position
    /// adds, for planning without allocating a cache.
    var cacheShape: (layers: Int, width: Int) { get }
    /// Writes the embedding of one token into `row` ([1, hiddenSize]) without allocating.
    func embed(token: Int, into row: Tensor) throws
    /// Runs embeddings [T, hiddenSize] at positions cache.length..., appends to the cache and returns
    /// logits [T, vocab] (or [1, vocab] for the last position when `lastOnly`). The logits live in the
    /// cache's workspace: they are valid until the next forward pass over that cache.
    func forward(embeddings: Tensor, cache: KVCache, lastOnly: Bool) throws -> Tensor
}

extension LanguageModel {
    /// A float32 cache (the precision the reference implementation keeps).
    public func makeCache(capacity: Int) -> KVCache { makeCache(capacity: capacity, precision: .f32) }
    /// From a cache of one position (a model whose cache is small, or whose sizes are not known otherwise).
    public var cacheShape: (layers: Int, width: Int) {
        let cache = makeCache(capacity: 1)
        return (cache.layers.count, cache.layers.first?.width ?? 0)
    }
}
