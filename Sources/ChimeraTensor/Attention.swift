import CChimeraKernels
import COpenBLAS
import Foundation

/// The precision a KV cache keeps keys and values in. float16 halves its memory and what a decoded
/// token reads; attention still computes in float32 (the keys and values widened as they are read),
/// so the only change is the rounding of each stored key and value to float16 (llama.cpp's default).
public enum KVPrecision: String, CaseIterable, Sendable, Codable {
    case f32, f16
    public var bytes: Int { self == .f32 ? 4 : 2 }
}

/// Preallocated keys and values of one attention layer for `capacity` positions, in the layout the
/// kernels' attention reads as it is (chimera_kernels.h, CHK_KEY_PANEL): per KV head, keys as panels
/// of 32 positions, dimension-major, and values as rows of headDim. The cache is owned by the caller
/// of a forward pass, never by the model, so a forward pass stays a function of its inputs.
public final class LayerKVCache: @unchecked Sendable {
    public let capacity: Int
    public let kvHeads: Int
    public let headDim: Int
    public let precision: KVPrecision
    /// Positions stored: the capacity rounded up to whole key panels.
    public let storedPositions: Int
    // Zeroed float storage holding `precision` elements (float16 ones two to a float).
    private let keyStorage: TensorStorage
    private let valueStorage: TensorStorage
    public private(set) var length = 0

    public convenience init(capacity: Int, kvHeads: Int, headDim: Int, precision: KVPrecision = .f32) {
        let floats = Self.storageFloats(capacity: capacity, kvHeads: kvHeads, headDim: headDim, precision: precision)
        self.init(capacity: capacity, kvHeads: kvHeads, headDim: headDim, precision: precision,
                  keys: TensorStorage(count: floats), values: TensorStorage(count: floats))
    }

    private init(capacity: Int, kvHeads: Int, headDim: Int, precision: KVPrecision, keys: TensorStorage, values: TensorStorage) {
        self.capacity = capacity
        self.kvHeads = kvHeads
        self.headDim = headDim
        self.precision = precision
        storedPositions = Self.wholePanels(capacity)
        keyStorage = keys
        valueStorage = values
    }

    /// `capacity` positions rounded up to whole key panels.
    private static func wholePanels(_ capacity: Int) -> Int {
        let panel = Int(CHK_KEY_PANEL)
        return (capacity + panel - 1) / panel * panel
    }

    /// Floats of storage the keys (or the values) take, whole 64-byte lines.
    private static func storageFloats(capacity: Int, kvHeads: Int, headDim: Int, precision: KVPrecision) -> Int {
        let bytes = kvHeads * wholePanels(capacity) * headDim * precision.bytes
        return (bytes + 63) / 64 * 16
    }

    /// The caches of `count` layers. When they fill a huge page or more (`oneBlock` nil) or when
    /// asked, their keys and values lie end to end in one block of huge pages
    /// (`WeightMemory.dedicated`), as the weights do: decode reads every layer's cache every token,
    /// and on 4 KiB pages each 4 KiB of it took a TLB entry, a page walk in a virtual machine (paired
    /// in kernel-ab, a layer's decode attention from memory: Qwen2-0.5B's 2–9 % faster at 672
    /// positions and 4 % at 2000, TinyLlama's 6–7 %). Otherwise each its own heap memory.
    public static func layers(_ count: Int, capacity: Int, kvHeads: Int, headDim: Int, precision: KVPrecision = .f32,
                              oneBlock: Bool? = nil) -> [LayerKVCache] {
        let floats = storageFloats(capacity: capacity, kvHeads: kvHeads, headDim: headDim, precision: precision)
        let blockFloats = 2 * count * floats  // keys and values of every layer
        guard oneBlock ?? (blockFloats * 4 >= WeightMemory.hugePage), count > 0 else {
            return (0..<count).map { _ in LayerKVCache(capacity: capacity, kvHeads: kvHeads, headDim: headDim, precision: precision) }
        }
        let (block, owner) = WeightMemory.dedicated(blockFloats * 4)
        let base = block.bindMemory(to: Float.self, capacity: blockFloats)
        func piece(_ i: Int) -> TensorStorage { TensorStorage(borrowing: base + i * floats, count: floats, owner: owner) }
        return (0..<count).map { layer in
            LayerKVCache(capacity: capacity, kvHeads: kvHeads, headDim: headDim, precision: precision,
                         keys: piece(2 * layer), values: piece(2 * layer + 1))
        }
    }

    /// Width of a position's keys (and values): kvHeads × headDim.
    public var width: Int { kvHeads * headDim }
    /// Bytes of keys and values held.
    public var bytes: Int { 2 * kvHeads * storedPositions * headDim * precision.bytes }
    var keyPanels: UnsafeMutableRawPointer { UnsafeMutableRawPointer(keyStorage.base) }
    var valueRows: UnsafeMutableRawPointer { UnsafeMutableRawPointer(valueStorage.base) }
    var isHalf: Int32 { precision == .f16 ? 1 : 0 }

    /// Appends [tokens, width] keys and values.
    public func append(keys newKeys: Tensor, values newValues: Tensor) {
        let tokens = newKeys.rows
        precondition(length + tokens <= capacity, "KV cache overflow: \(length) + \(tokens) > \(capacity)")
        precondition(newKeys.columns == width && newValues.shape == newKeys.shape, "KV cache: keys \(newKeys.shape), values \(newValues.shape), width \(width)")
        chk_kv_append(newKeys.data, newValues.data, width, tokens, length, kvHeads, headDim, storedPositions, isHalf, keyPanels, valueRows)
        length += tokens
    }

    /// The cache in float32, in its own layout: itself, or (float16) its first `length` positions
    /// widened into `workspace`'s buffers (sized for the whole cache, so they serve every call).
    func float32Panels(_ workspace: Workspace) -> (keys: UnsafeMutablePointer<Float>, values: UnsafeMutablePointer<Float>) {
        if precision == .f32 { return (keyStorage.base, valueStorage.base) }
        let count = kvHeads * storedPositions * headDim
        let keys = workspace.scratch("widened cache keys", count: count), values = workspace.scratch("widened cache values", count: count)
        chk_kv_widen(keyPanels.assumingMemoryBound(to: UInt16.self), valueRows.assumingMemoryBound(to: UInt16.self), length,
                     kvHeads, headDim, storedPositions, keys, values, Int32(ComputeThreads.current))
        return (keys, values)
    }

    /// The first `length` positions as rows [length, width] of keys and of values (a float16 cache
    /// widened into `workspace` first).
    public func rows(keys: UnsafeMutablePointer<Float>, values: UnsafeMutablePointer<Float>, workspace: Workspace = Workspace()) {
        let panels = float32Panels(workspace)
        chk_kv_rows(panels.keys, panels.values, length, kvHeads, headDim, storedPositions, keys, values)
    }

    /// Prefetches the lines appending the token at `position` will write (decode calls it before the
    /// token's q/k/v product, during which they arrive).
    public func prefetchAppend(position: Int) {
        chk_kv_prefetch_append(position, kvHeads, headDim, storedPositions, isHalf, keyPanels, valueRows)
    }

    /// Lets the thread pool's waiting workers prefetch the keys and values each starts a decoded
    /// token's attention over `positions` positions with, while the caller works alone before it.
    public func prefetchDecodeAttention(positions: Int) {
        chk_prefetch_attention(keyPanels, valueRows, storedPositions, positions, kvHeads, headDim, isHalf,
                               Int32(ComputeThreads.current), WeightMatrix.prefetchBytes)
    }

    public func reset() { length = 0 }
    /// Forgets every position from `positions` on (later appends overwrite them).
    public func truncate(to positions: Int) { length = min(length, max(0, positions)) }
}

/// Attention of queries [T, heads*headDim] at positions start ..< start + T over the first
/// `cache.length` positions of a layer's cache (causal), into `out`. The kernels' attention reads
/// the cache as it is (a decoded token on every CPU, a prompt with AVX-512; a float16 cache only
/// for a decoded token, for a prompt widened first into `workspace`); for a prompt
/// without AVX-512 its rows are copied out into `workspace`, with the general path's scores, for
/// the general path.
public func cachedAttention(
    queries: Tensor, cache: LayerKVCache, heads: Int, start: Int, scale: Float? = nil, workspace: Workspace, into out: Tensor
) {
    let headDim = cache.headDim, queryWidth = heads * headDim
    precondition(queries.columns == queryWidth && out.shape == queries.shape, "attention: queries \(queries.shape), output \(out.shape)")
    let scale = scale ?? 1 / Float(headDim).squareRoot()
    func kernels(half: Int32, keys: UnsafeRawPointer, values: UnsafeRawPointer) -> Bool {
        chk_attention_cached(queries.data, queryWidth, queries.rows, half, keys, values, cache.storedPositions, cache.length, heads,
                             cache.kvHeads, headDim, scale, start, out.data, queryWidth, Int32(ComputeThreads.current)) != 0
    }
    if kernels(half: cache.isHalf, keys: cache.keyPanels, values: cache.valueRows) { return }
    let panels = cache.float32Panels(workspace)  // the cache itself when float32
    if cache.precision == .f16, kernels(half: 0, keys: panels.keys, values: panels.values) { return }
    // Without AVX-512 a prompt (a decoded token reads the panels in place, in the kernels): the
    // cache as rows, in buffers sized for the whole cache so that they serve every call.
    let keys = workspace.scratch("cached keys", count: cache.capacity * cache.width)
    let values = workspace.scratch("cached values", count: cache.capacity * cache.width)
    let scores = workspace.scratch("cached scores", count: queries.rows * cache.capacity)
    chk_kv_rows(panels.keys, panels.values, cache.length, cache.kvHeads, headDim, cache.storedPositions, keys, values)
    multiHeadAttention(queries: queries, keys: keys, values: values, keyCount: cache.length, heads: heads,
                       kvHeads: cache.kvHeads, headDim: headDim, causalOffset: start, scale: scale, scores: scores, into: out)
}

/// Multi-head attention of queries [T, heads*headDim] over keys/values [S, kvHeads*headDim]
/// (grouped-query when kvHeads < heads). With `causalOffset` = p, query i (absolute position p+i)
/// sees keys 0...p+i; with nil every query sees every key (vision encoders).
public func multiHeadAttention(
    queries: Tensor, keys: UnsafePointer<Float>, values: UnsafePointer<Float>, keyCount: Int,
    heads: Int, kvHeads: Int, headDim: Int, causalOffset: Int?, scale: Float? = nil
) -> Tensor {
    precondition(heads % kvHeads == 0, "attention: \(heads) heads not divisible by \(kvHeads) KV heads")
    let tokens = queries.rows
    let queryWidth = heads * headDim
    precondition(queries.columns == queryWidth, "attention: query width \(queries.columns) != \(queryWidth)")
    let out = Tensor(zeros: [tokens, queryWidth])
    let scores = UnsafeMutablePointer<Float>.allocate(capacity: max(tokens * keyCount, 1))
    defer { scores.deallocate() }
    multiHeadAttention(queries: queries, keys: keys, values: values, keyCount: keyCount, heads: heads, kvHeads: kvHeads,
                       headDim: headDim, causalOffset: causalOffset, scale: scale, scores: scores, into: out)
    return out
}

/// The same, writing into `out` [T, heads*headDim] with `scores` scratch of at least T × keyCount floats.
public func multiHeadAttention(
    queries: Tensor, keys: UnsafePointer<Float>, values: UnsafePointer<Float>, keyCount: Int,
    heads: Int, kvHeads: Int, headDim: Int, causalOffset: Int?, scale: Float? = nil,
    scores: UnsafeMutablePointer<Float>, into out: Tensor
) {
    let tokens = queries.rows
    let queryWidth = heads * headDim, kvWidth = kvHeads * headDim
    precondition(out.rows == tokens && out.columns == queryWidth, "attention: output \(out.shape)")
    let group = heads / kvHeads
    let scale = scale ?? 1 / Float(headDim).squareRoot()
    if tokens == 1, causalOffset.map({ $0 + 1 >= keyCount }) ?? true {
        // Decode: one query row sees every cached key (the causal bound is the cache length), so a
        // direct dot/softmax/axpy loop threaded over heads beats two sgemm calls per head.
        chk_attend(queries.data, keys, values, keyCount, heads, kvHeads, headDim, scale, out.data, Int32(ComputeThreads.current))
        return
    }
    // Whole sequences (prefill, encoders): the kernels' attention (AVX-512) packs each head once and
    // runs scores, softmax and P·V a block of queries at a time, threaded over heads.
    if chk_attention(queries.data, queryWidth, keys, values, kvWidth, tokens, keyCount, heads, kvHeads, headDim, scale,
                     causalOffset ?? -1, out.data, queryWidth, Int32(ComputeThreads.current)) != 0 { return }
    // Without it, the threads claim blocks of query rows and take each through every head, with
    // its own rows of `scores`; BLAS runs single-threaded inside so that the two levels of threads
    // do not oversubscribe the cores. A causal block computes scores only for the keys its last row
    // sees (a 640-token prompt in blocks of 80: 56 % of the full matrix), and the blocks are
    // claimed from the last (the most keys) so that the threads finish together. Without a causal
    // mask, two blocks a thread (not four): each block packs every head's keys and values again
    // (CLIP's attention 6 % faster by perf's share).
    let q = queries.data, o = out.data
    let blockRows = causalOffset == nil ? max(32, tokens / (2 * ComputeThreads.current)) : 32
    ComputeThreads.splitRows(tokens, minimumPerThread: blockRows) { claimed0, claimed1 in
        let r0 = tokens - claimed1, r1 = tokens - claimed0, m = r1 - r0, s = scores + r0 * keyCount
        let seen = causalOffset.map { min(keyCount, $0 + r1) } ?? keyCount
        for h in 0..<heads {
            let kvHead = h / group
            // scores = scale · Q_h K_hᵀ (keys 0 ..< seen; rows keyCount apart)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(seen), Int32(headDim),
                        scale, q + r0 * queryWidth + h * headDim, Int32(queryWidth), keys + kvHead * headDim, Int32(kvWidth),
                        0, s, Int32(keyCount))
            if let offset = causalOffset {
                for i in r0..<r1 {
                    let firstHidden = offset + i + 1
                    if firstHidden < seen {
                        let row = s + (i - r0) * keyCount
                        for j in firstHidden..<seen { row[j] = -Float.infinity }
                    }
                }
            }
            softmaxRowsInPlace(s, rows: m, columns: seen, stride: keyCount)
            // out_h = P V_h
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(headDim), Int32(seen),
                        1, s, Int32(keyCount), values + kvHead * headDim, Int32(kvWidth),
                        0, o + r0 * queryWidth + h * headDim, Int32(queryWidth))
        }
    }
}

/// Scratch tensors reused across forward passes, so that decoding allocates nothing per token.
/// A request for the same key and row count returns the same view; a larger request grows the
/// buffer once. Views are valid until the next request for their key.
public final class Workspace: @unchecked Sendable {
    private var buffers: [String: TensorStorage] = [:]
    private var views: [String: Tensor] = [:]

    public init() {}

    public func tensor(_ key: String, rows: Int, columns: Int) -> Tensor {
        if let view = views[key], view.rows == rows, view.columns == columns { return view }
        var storage = buffers[key]
        if storage == nil || storage!.count < rows * columns {
            storage = TensorStorage(count: rows * columns)
            buffers[key] = storage
        }
        let view = Tensor(shape: [rows, columns], storage: storage!)
        views[key] = view
        return view
    }

    /// Raw scratch of at least `count` floats.
    public func scratch(_ key: String, count: Int) -> UnsafeMutablePointer<Float> {
        tensor(key, rows: 1, columns: max(count, 1)).data
    }
}
