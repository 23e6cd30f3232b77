import CChimeraKernels
import COpenBLAS
import Foundation

// Kernels over float32 tensors. Matrix products over whole sequences are one sgemm each;
// activations, softmax, layer norms and residual adds go to the SIMD kernels of
// CChimeraKernels/elementwise.c, threaded over rows.

/// Sets the BLAS thread count once, from CHIMERA_THREADS or the core count.
public enum ComputeThreads {
    nonisolated(unsafe) private static var configured = false
    public static let most = 1024
    public static func configure(_ count: Int? = nil) {
        if configured && count == nil { return }
        let env = ProcessInfo.processInfo.environment["CHIMERA_THREADS"].flatMap(Int.init)
        // At most `most` (BLAS and the kernels' pool take an int32, and no machine here has more cores).
        let n = min(most, max(1, count ?? env ?? ProcessInfo.processInfo.activeProcessorCount))
        openblas_set_num_threads(Int32(n))
        configured = true
    }
    public static var current: Int { Int(openblas_get_num_threads()) }

    /// Runs `body` over `rows` split into one block per BLAS thread, with BLAS single-threaded
    /// meanwhile: for work made of many small sgemm calls (attention heads), each thread's calls
    /// then run on its own core instead of every call waking BLAS's threads. Concurrent callers are
    /// safe: one that finds BLAS already single-threaded runs its rows alone and changes nothing.
    public static func splitRows(_ rows: Int, minimumPerThread: Int, _ body: (Int, Int) -> Void) {
        let blasThreads = current
        if blasThreads <= 1 || rows < 2 * minimumPerThread { body(0, rows); return }
        openblas_set_num_threads(1)
        defer { openblas_set_num_threads(Int32(blasThreads)) }
        ParallelRows.run(rows, minimumPerThread: minimumPerThread, threads: blasThreads, body)
    }
}

/// y = x · Wᵀ + b for x [..., in], W [out, in] (the PyTorch nn.Linear layout), b [out].
public func linear(_ x: Tensor, weight: Tensor, bias: Tensor? = nil) -> Tensor {
    let out = Tensor(zeros: Array(x.shape.dropLast()) + [weight.shape[0]])
    linear(x, weight: weight, bias: bias, into: out)
    return out
}

/// What every linear product checks of where it writes: `out` is [rows, outputs], `bias` outputs long.
func checkLinearOutput(_ out: Tensor, rows: Int, outputs: Int, bias: Tensor?) {
    precondition(out.rows == rows && out.columns == outputs, "linear: output \(out.shape) for \(rows)×\(outputs)")
    if let bias { precondition(bias.count == outputs, "linear: bias \(bias.shape) for \(outputs) outputs") }
}

/// y = x · Wᵀ + b written into `out` ([rows of x, out features]); one sgemm for all rows.
public func linear(_ x: Tensor, weight: Tensor, bias: Tensor?, into out: Tensor) {
    let inFeatures = x.columns, rows = x.rows
    precondition(weight.rank == 2 && weight.shape[1] == inFeatures,
                 "linear: input width \(inFeatures) does not match weight \(weight.shape)")
    let outFeatures = weight.shape[0]
    checkLinearOutput(out, rows: rows, outputs: outFeatures, bias: bias)
    guard rows > 0 else { return }
    // Batches go to the kernels' GEMM (AVX-512 or AVX2; the bias goes in with the product); a row or two,
    // and CPUs without it, to BLAS, accumulating onto rows filled with the bias.
    if rows > WeightMatrix.rowByRowLimit, chk_gemm_nt(CHK_F32, weight.data, nil, outFeatures, inFeatures, bias?.data, x.data, inFeatures, rows,
                             out.data, outFeatures, 0, Int32(ComputeThreads.current)) != 0 { return }
    if let bias { fillRows(out.data, rows: rows, with: bias) }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(outFeatures), Int32(inFeatures),
                1, x.data, Int32(inFeatures), weight.data, Int32(inFeatures),
                bias == nil ? 0 : 1, out.data, Int32(outFeatures))
}

/// Writes `row` into each of `rows` consecutive rows of its width at `out` (a bias the product then
/// accumulates onto).
func fillRows(_ out: UnsafeMutablePointer<Float>, rows: Int, with row: Tensor) {
    for r in 0..<rows { (out + r * row.count).update(from: row.data, count: row.count) }
}

/// Adds `row` to each of `rows` consecutive rows of its width at `out` (a bias after the product).
func addToRows(_ out: UnsafeMutablePointer<Float>, rows: Int, _ row: Tensor) {
    for r in 0..<rows {
        let dst = out + r * row.count
        for i in 0..<row.count { dst[i] += row.data[i] }
    }
}

/// C = A · B (or A · Bᵀ) for plain 2-D tensors.
public func matmul(_ a: Tensor, _ b: Tensor, transposeB: Bool = false) -> Tensor {
    let m = a.rows, k = a.columns
    let n = transposeB ? b.shape[0] : b.columns
    precondition((transposeB ? b.columns : b.rows) == k, "matmul: \(a.shape) x \(b.shape)")
    let out = Tensor(zeros: [m, n])
    cblas_sgemm(CblasRowMajor, CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans, Int32(m), Int32(n), Int32(k),
                1, a.data, Int32(k), b.data, Int32(b.columns), 0, out.data, Int32(n))
    return out
}

// MARK: - Normalization

/// LayerNorm over the last dimension (biased variance, as PyTorch).
public func layerNorm(_ x: Tensor, weight: Tensor, bias: Tensor?, eps: Float) -> Tensor {
    let out = Tensor(zeros: x.shape)
    layerNorm(x, weight: weight, bias: bias, eps: eps, into: out)
    return out
}

public func layerNorm(_ x: Tensor, weight: Tensor, bias: Tensor?, eps: Float, into out: Tensor) {
    let n = x.columns
    precondition(weight.count == n && out.count == x.count, "layerNorm: weight \(weight.shape), output \(out.shape) for \(x.shape)")
    let src = x.data, dst = out.data, w = weight.data, b = bias?.data
    ParallelRows.run(x.rows, minimumPerThread: elementwiseRowsPerThread(n)) { r0, r1 in
        chk_layernorm_rows(src + r0 * n, dst + r0 * n, r1 - r0, n, w, b, eps)
    }
}

/// LayerNorm of `count` floats (one row, or one attention head of a row); `destination` may be `source`.
public func layerNorm(_ source: UnsafePointer<Float>, into destination: UnsafeMutablePointer<Float>, count n: Int,
                      weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?, eps: Float) {
    chk_layernorm_rows(source, destination, 1, n, weight, bias, eps)
}

/// The residual step of a pre-norm layer in one pass over the rows: `hidden` += `delta` (+ `bias`,
/// the bias of the projection that produced `delta`), then, when `normalized` is given, it receives
/// LayerNorm(hidden) with `norm`'s weight, bias and eps.
public func residualLayerNorm(_ hidden: Tensor, adding delta: Tensor, bias: Tensor? = nil,
                              norm: (weight: Tensor, bias: Tensor?, eps: Float)? = nil, into normalized: Tensor? = nil) {
    let n = hidden.columns
    precondition(delta.count == hidden.count && (bias?.count ?? n) == n, "residualLayerNorm: \(hidden.shape) + \(delta.shape), bias \(bias?.shape ?? [])")
    precondition((norm == nil) == (normalized == nil), "residualLayerNorm: a norm needs an output and an output a norm")
    if let norm, let normalized {
        precondition(norm.weight.count == n && normalized.count == hidden.count, "residualLayerNorm: norm \(norm.weight.shape), output \(normalized.shape) for \(hidden.shape)")
    }
    let h = hidden.data, d = delta.data, b = bias?.data, w = norm?.weight.data, nb = norm?.bias?.data
    let eps = norm?.eps ?? 0, out = normalized?.data
    ParallelRows.run(hidden.rows, minimumPerThread: elementwiseRowsPerThread(n)) { r0, r1 in
        chk_residual_layernorm_rows(h + r0 * n, d + r0 * n, b, r1 - r0, n, w, nb, eps, out.map { $0 + r0 * n })
    }
}

/// Rows per thread for element-wise kernels: a thread is worth waking for about 16K floats.
@inline(__always) func elementwiseRowsPerThread(_ columns: Int) -> Int { max(1, 16384 / max(columns, 1)) }

/// RMSNorm over the last dimension. `weightOffset` is 1 for Gemma, whose weight is stored as (w - 1).
public func rmsNorm(_ x: Tensor, weight: Tensor, eps: Float, weightOffset: Float = 0) -> Tensor {
    let out = Tensor(zeros: x.shape)
    rmsNorm(x, weight: weight, eps: eps, weightOffset: weightOffset, into: out)
    return out
}

public func rmsNorm(_ x: Tensor, weight: Tensor, eps: Float, weightOffset: Float = 0, into out: Tensor) {
    let n = x.columns
    precondition(weight.count == n && out.count == x.count, "rmsNorm: weight \(weight.shape), output \(out.shape) for \(x.shape)")
    // In the kernels: a Swift loop summed the squares one after another (a float sum is not
    // reordered), 1.4 µs a row of 896 — two a layer, 0.5 % of a Qwen2-0.5B decoded token.
    let src = x.data, dst = out.data, w = weight.data
    ParallelRows.run(x.rows, minimumPerThread: elementwiseRowsPerThread(n)) { r0, r1 in
        chk_rmsnorm_rows(src + r0 * n, dst + r0 * n, r1 - r0, n, w, weightOffset, eps)
    }
}

// MARK: - Activations

public enum Activation: String, Sendable, Codable, CaseIterable {
    case gelu                   // exact, erf-based
    case geluTanh = "gelu_pytorch_tanh"
    case quickGelu = "quick_gelu"
    case silu
    case relu

    /// The Hugging Face config names `init(configName:)` knows.
    public static let configNames = ["gelu", "gelu_python", "gelu_pytorch_tanh", "gelu_new", "gelu_fast", "gelu_tanh", "gelu_python_tanh", "gelu_accurate",
                                     "quick_gelu", "silu", "swish", "relu"]

    /// Maps the activation names found in Hugging Face configs to a kernel.
    public init?(configName: String) {
        switch configName {
        case "gelu", "gelu_python": self = .gelu
        // transformers' tanh approximations, each the same formula.
        case "gelu_pytorch_tanh", "gelu_new", "gelu_fast", "gelu_tanh", "gelu_python_tanh", "gelu_accurate": self = .geluTanh
        case "quick_gelu": self = .quickGelu
        case "silu", "swish": self = .silu
        case "relu": self = .relu
        default: return nil
        }
    }

    /// The activation's kind in CChimeraKernels/elementwise.h.
    var kernelKind: Int32 {
        switch self {
        case .gelu: Int32(CHK_ACT_GELU)
        case .geluTanh: Int32(CHK_ACT_GELU_TANH)
        case .quickGelu: Int32(CHK_ACT_QUICK_GELU)
        case .silu: Int32(CHK_ACT_SILU)
        case .relu: Int32(CHK_ACT_RELU)
        }
    }

    @inline(__always) public func apply(_ v: Float) -> Float {
        switch self {
        case .gelu: return 0.5 * v * (1 + erff(v * 0.70710678118654752))
        case .geluTanh:
            let inner: Float = 0.7978845608028654 * (v + 0.044715 * v * v * v)
            return 0.5 * v * (1 + tanhf(inner))
        case .quickGelu: return v / (1 + expf(-1.702 * v))
        case .silu: return v / (1 + expf(-v))
        case .relu: return max(v, 0)
        }
    }
}

public func activate(_ x: Tensor, _ activation: Activation) -> Tensor {
    let out = Tensor(zeros: x.shape)
    out.data.update(from: x.data, count: x.count)
    activateInPlace(out, activation)
    return out
}

public func activateInPlace(_ x: Tensor, _ activation: Activation) {
    biasActivateInPlace(x, bias: nil, activation)
}

/// x = act(x + bias) row by row: the bias of the linear layer that produced x, fused with its activation.
public func biasActivateInPlace(_ x: Tensor, bias: Tensor?, _ activation: Activation) {
    let n = x.columns, p = x.data, b = bias?.data, kind = activation.kernelKind
    precondition(bias.map { $0.count == n } ?? true, "biasActivateInPlace: bias \(bias?.shape ?? []) for \(x.shape)")
    ParallelRows.run(x.rows, minimumPerThread: elementwiseRowsPerThread(n)) { r0, r1 in
        chk_activate_rows(p + r0 * n, b, r1 - r0, n, kind)
    }
}

/// act(gate) * up, the gated MLP of Llama (SiLU) and Gemma (tanh GELU).
public func gatedActivation(gate: Tensor, up: Tensor, _ activation: Activation) -> Tensor {
    let out = Tensor(zeros: gate.shape)
    gatedActivation(gate: gate, up: up, activation, into: out)
    return out
}

public func gatedActivation(gate: Tensor, up: Tensor, _ activation: Activation, into out: Tensor) {
    precondition(gate.count == up.count && out.count == gate.count, "gatedActivation: \(gate.shape) vs \(up.shape)")
    let n = gate.columns, g = gate.data, u = up.data, o = out.data, kind = activation.kernelKind
    ParallelRows.run(gate.rows, minimumPerThread: elementwiseRowsPerThread(n)) { r0, r1 in
        chk_gated_rows(g + r0 * n, u + r0 * n, o + r0 * n, r1 - r0, n, kind)
    }
}

// MARK: - Element-wise

public func add(_ a: Tensor, _ b: Tensor) -> Tensor {
    precondition(a.count == b.count, "add: \(a.shape) vs \(b.shape)")
    let out = Tensor(zeros: a.shape)
    for i in 0..<a.count { out.data[i] = a.data[i] + b.data[i] }
    return out
}

public func addInPlace(_ a: Tensor, _ b: Tensor) {
    precondition(a.count == b.count, "addInPlace: \(a.shape) vs \(b.shape)")
    residualLayerNorm(a, adding: b)
}

/// Adds a row vector to every row.
public func addRowInPlace(_ a: Tensor, _ row: Tensor) {
    let n = a.columns
    precondition(row.count == n, "addRowInPlace: \(a.shape) + \(row.shape)")
    for r in 0..<a.rows { for i in 0..<n { a.data[r * n + i] += row.data[i] } }
}

public func scaleInPlace(_ a: Tensor, _ factor: Float) {
    for i in 0..<a.count { a.data[i] *= factor }
}

/// Index of the first largest of `count` floats (SIMD; greedy decoding over a whole vocabulary,
/// threaded when it is large).
public func argmax(_ p: UnsafePointer<Float>, count: Int) -> Int {
    chk_argmax_threaded(p, count, Int32(ComputeThreads.current))
}

/// Softmax of each row in place, max-subtracted for stability.
public func softmaxRowsInPlace(_ p: UnsafeMutablePointer<Float>, rows: Int, columns: Int, stride: Int? = nil) {
    chk_softmax_rows(p, rows, columns, stride ?? columns)
}

/// log Σ_c exp(p[r, c]) of each of `rows` rows of `columns` floats (the log-softmax's normalizer:
/// log softmax(p[r])[c] = p[r, c] − out[r]), max-subtracted, so exact for any logits; the rows are
/// overwritten (with exp(p − max)).
public func logSumExpRowsInPlace(_ p: UnsafeMutablePointer<Float>, rows: Int, columns: Int, into out: UnsafeMutablePointer<Double>) {
    withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * max(rows, 1)) { scratch in
        let sums = scratch.baseAddress!, maxes = sums + rows
        chk_exp_rows(p, rows, columns, columns, sums, maxes)
        for r in 0..<rows { out[r] = Double(maxes[r]) + log(Double(sums[r])) }
    }
}

/// Concatenates tensors along the first dimension.
public func concatRows(_ parts: [Tensor]) -> Tensor {
    guard let first = parts.first else { return Tensor(zeros: [0, 0]) }
    let width = first.columns
    let total = parts.reduce(0) { $0 + $1.rows }
    let out = Tensor(zeros: [total, width])
    var offset = 0
    for part in parts {
        precondition(part.columns == width, "concatRows: width \(part.columns) vs \(width)")
        (out.data + offset).update(from: part.data, count: part.count)
        offset += part.count
    }
    return out
}
