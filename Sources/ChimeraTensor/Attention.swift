import COpenBLAS
import Foundation

/// Preallocated keys and values of one attention layer, [capacity, kvHeads * headDim] each.
/// The cache is owned by the caller of a forward pass, never by the model, so a forward pass
/// stays a function of its inputs.
public final class LayerKVCache: @unchecked Sendable {
    public let keys: Tensor
    public let values: Tensor
    public let capacity: Int
    public let width: Int
    public private(set) var length = 0

    public init(capacity: Int, width: Int) {
        self.capacity = capacity
        self.width = width
        keys = Tensor(zeros: [capacity, width])
        values = Tensor(zeros: [capacity, width])
    }

    /// Appends [tokens, width] keys and values.
    public func append(keys newKeys: Tensor, values newValues: Tensor) {
        let tokens = newKeys.rows
        precondition(length + tokens <= capacity, "KV cache overflow: \(length) + \(tokens) > \(capacity)")
        (keys.data + length * width).update(from: newKeys.data, count: tokens * width)
        (values.data + length * width).update(from: newValues.data, count: tokens * width)
        length += tokens
    }

    public func reset() { length = 0 }
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
    let queryWidth = heads * headDim, kvWidth = kvHeads * headDim
    precondition(queries.columns == queryWidth, "attention: query width \(queries.columns) != \(queryWidth)")
    let group = heads / kvHeads
    let scale = scale ?? 1 / Float(headDim).squareRoot()
    let out = Tensor(zeros: [tokens, queryWidth])
    let scores = Tensor(zeros: [tokens, keyCount])
    for h in 0..<heads {
        let kvHead = h / group
        // scores = scale · Q_h K_hᵀ
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(tokens), Int32(keyCount), Int32(headDim),
                    scale, queries.data + h * headDim, Int32(queryWidth), keys + kvHead * headDim, Int32(kvWidth),
                    0, scores.data, Int32(keyCount))
        if let offset = causalOffset {
            for i in 0..<tokens {
                let firstHidden = offset + i + 1
                if firstHidden < keyCount {
                    let row = scores.data + i * keyCount
                    for j in firstHidden..<keyCount { row[j] = -Float.infinity }
                }
            }
        }
        softmaxRowsInPlace(scores.data, rows: tokens, columns: keyCount)
        // out_h = P V_h
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(tokens), Int32(headDim), Int32(keyCount),
                    1, scores.data, Int32(keyCount), values + kvHead * headDim, Int32(kvWidth),
                    0, out.data + h * headDim, Int32(queryWidth))
    }
    return out
}
