import CChimeraKernels
import COpenBLAS
import Foundation

/// How a weight matrix is stored. f16/bf16 are used in place from the memory-mapped file;
/// q8_0, q6_0 and q4_0 are blocks of 32 weights sharing a float16 scale (see chimera_kernels.h).
public enum WeightFormat: String, Sendable, CaseIterable, Codable {
    case f32, f16, bf16
    case q8_0, q6_0, q4_0

    /// Bytes per weight, scales included.
    public var bytesPerWeight: Double {
        switch self {
        case .f32: return 4
        case .f16, .bf16: return 2
        case .q8_0: return 34.0 / 32
        case .q6_0: return 26.0 / 32
        case .q4_0: return 18.0 / 32
        }
    }
    public var isQuantized: Bool { self == .q8_0 || self == .q6_0 || self == .q4_0 }
    /// The quantized formats' names, for messages ("q8_0, q6_0, q4_0").
    public static var quantizedNames: String { allCases.filter(\.isQuantized).map(\.rawValue).joined(separator: ", ") }
}

public enum WeightMatrixError: LocalizedError, Equatable {
    case notBlockAligned(name: String, columns: Int, format: WeightFormat)
    public var errorDescription: String? {
        switch self {
        case let .notBlockAligned(name, columns, format):
            return "tensor '\(name)': \(columns) columns is not a multiple of the \(format.rawValue) block of 32"
        }
    }
}

/// A [rows, columns] weight matrix (PyTorch nn.Linear layout: one row per output) in any
/// `WeightFormat`. Products are computed from the stored form: batches of up to `rowByRowLimit`
/// rows (decode, short prompts) by SIMD matrix-vector kernels threaded over rows, all the rows in
/// one pass; longer batches by the kernels' GEMM, which converts the stored form while packing
/// (or, where it declines, sgemm over float32 tiles converted a block of rows at a time), so no
/// full-size float32 copy is ever made.
public final class WeightMatrix: @unchecked Sendable {
    /// Products of float32 tensors without a WeightMatrix (`linear`) of at most this many rows go
    /// to BLAS's sgemm, more to the kernels' GEMM. A WeightMatrix has its own limit per format
    /// (`rowByRowLimit`), below which its products go through the matrix-vector kernels.
    public static let rowByRowLimit = 2

    /// This matrix's limit. A GEMM converts and packs every weight once, which for a few rows costs
    /// several passes over them, while each row after the first costs the matrix-vector kernels
    /// about 0.1–0.35 of a pass (each step of weights is loaded and unpacked once for four
    /// quantized or two float tokens). Where the two cross, measured on 2 threads on single
    /// matrices (TinyLlama's 5632 × 2048, Qwen2's 4864 × 896): q4_0 about 24 rows, q6_0 20–24,
    /// q8_0 16, f16 and bf16 12–16, f32 8; whole prompts of 8 tokens still gain (TinyLlama f16
    /// 283 → 236 ms, bf16 322 → 200, Qwen2-0.5B f32 139 → 110).
    public var rowByRowLimit: Int {
        switch format {
        case .q4_0, .q6_0: return 16
        case .q8_0: return 12
        case .f16, .bf16, .f32: return 8
        }
    }

    public let format: WeightFormat
    public let rows: Int
    public let columns: Int
    /// f32: the floats; f16/bf16: UInt16 values; q8_0: Int8 values; q4_0: packed nibbles.
    public let data: UnsafeRawPointer
    /// float16 block scales [rows, columns / 32] of quantized formats.
    public let scales: UnsafePointer<UInt16>?
    /// The float32 tensor of an f32 matrix (used as is by sgemm).
    public let tensor: Tensor?
    private let owner: AnyObject?

    public init(_ tensor: Tensor) {
        precondition(tensor.rank == 2, "WeightMatrix needs a 2-D tensor, found \(tensor.shape)")
        format = .f32; rows = tensor.shape[0]; columns = tensor.shape[1]
        data = UnsafeRawPointer(tensor.data); scales = nil; self.tensor = tensor; owner = tensor.storage
    }

    /// Borrows stored data (kept alive by `owner`, e.g. a memory-mapped file).
    public init(format: WeightFormat, rows: Int, columns: Int, data: UnsafeRawPointer, scales: UnsafePointer<UInt16>?, owner: AnyObject) {
        precondition(format != .f32, "use WeightMatrix(_ tensor:) for float32")
        precondition(!format.isQuantized || (scales != nil && columns % 32 == 0), "quantized matrix without scales or block-aligned columns")
        self.format = format; self.rows = rows; self.columns = columns
        self.data = data; self.scales = scales; tensor = nil; self.owner = owner
    }

    /// Bytes the weights occupy (what one decoded token reads).
    public var byteCount: Int { Int((Double(rows * columns) * format.bytesPerWeight).rounded()) }

    /// Converts float32 weights (PyTorch layout) to `format`; quantized formats need columns % 32 == 0.
    public static func converting(_ tensor: Tensor, to format: WeightFormat, name: String = "") throws -> WeightMatrix {
        precondition(tensor.rank == 2, "WeightMatrix needs a 2-D tensor, found \(tensor.shape)")
        if format == .f32 { return WeightMatrix(tensor) }
        return try building(format, rows: tensor.shape[0], columns: tensor.shape[1], name: name) { row0, count, out in
            out.update(from: tensor.data + row0 * tensor.shape[1], count: count * tensor.shape[1])
        }
    }

    /// This matrix in `format`, widened and converted a chunk of rows at a time (no whole float32
    /// copy of a stored f16/bf16/quantized matrix); itself when already in `format`.
    public func converted(to format: WeightFormat, name: String = "") throws -> WeightMatrix {
        if format == self.format { return self }
        if format == .f32 { return WeightMatrix(widened()) }
        return try Self.building(format, rows: rows, columns: columns, name: name) { row0, count, out in
            widenRows(row0, row0 + count, into: out)
        }
    }

    /// Builds a matrix in `format` from float32 rows that `fill(row0, count, out)` writes a chunk
    /// at a time, so that no full float32 copy exists (random benchmark weights, conversion).
    public static func building(_ format: WeightFormat, rows: Int, columns: Int, name: String = "",
                                fill: (Int, Int, UnsafeMutablePointer<Float>) -> Void) throws -> WeightMatrix {
        if format.isQuantized, columns % 32 != 0 { throw WeightMatrixError.notBlockAligned(name: name, columns: columns, format: format) }
        // 1 MiB of float32 rows at a time: the scratch is freed, but a process's peak RSS keeps it.
        let chunk = max(1, min(rows, (1 << 18) / max(columns, 1)))
        if format == .f32 {
            let t = WeightMemory.tensor(rows: rows, columns: columns)
            var r = 0
            while r < rows { let n = min(chunk, rows - r); fill(r, n, t.data + r * columns); r += n }
            return WeightMatrix(t)
        }
        let valueBytes = Self.valueBytes(format, rows: rows, columns: columns)
        let (pointer, owner) = WeightMemory.allocate(valueBytes + Self.scaleBytes(format, rows: rows, columns: columns))
        let scales = format.isQuantized ? (pointer + valueBytes).assumingMemoryBound(to: UInt16.self) : nil
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: chunk * columns)
        defer { scratch.deallocate() }
        var r = 0
        while r < rows {
            let n = min(chunk, rows - r)
            fill(r, n, scratch)
            // The chunk's rows converted on every compute thread (rows are independent).
            ParallelRows.run(n, minimumPerThread: 8) { c0, c1 in
                let row = r + c0, count = c1 - c0, source = scratch + c0 * columns
                let values = pointer + Self.valueBytes(format, rows: row, columns: columns), rowScales = scales.map { $0 + row * columns / 32 }
                switch format {
                case .f32: break
                case .f16: chk_to_f16(source, count * columns, values.assumingMemoryBound(to: UInt16.self))
                case .bf16: chk_to_bf16(source, count * columns, values.assumingMemoryBound(to: UInt16.self))
                case .q8_0: chk_quantize_q8_0(source, count, columns, values.assumingMemoryBound(to: Int8.self), rowScales!)
                case .q6_0: chk_quantize_q6_0(source, count, columns, values.assumingMemoryBound(to: UInt8.self), rowScales!)
                case .q4_0: chk_quantize_q4_0(source, count, columns, values.assumingMemoryBound(to: UInt8.self), rowScales!)
                }
            }
            r += n
        }
        return WeightMatrix(format: format, rows: rows, columns: columns, data: pointer, scales: scales.map { UnsafePointer($0) }, owner: owner)
    }

    /// Bytes of the float16 block scales (one per 32 weights) of a [rows, columns] matrix in
    /// `format`: none unless quantized.
    public static func scaleBytes(_ format: WeightFormat, rows: Int, columns: Int) -> Int {
        format.isQuantized ? rows * columns / 32 * 2 : 0
    }

    /// Bytes of the stored values (scales not included) of a [rows, columns] matrix in `format`.
    public static func valueBytes(_ format: WeightFormat, rows: Int, columns: Int) -> Int {
        switch format {
        case .f32: return rows * columns * 4
        case .f16, .bf16: return rows * columns * 2
        case .q8_0: return rows * columns
        case .q6_0: return rows * columns / 4 * 3
        case .q4_0: return rows * columns / 2
        }
    }

    /// Rows [row0, row1) as float32 into `out` (row-major).
    public func widenRows(_ row0: Int, _ row1: Int, into out: UnsafeMutablePointer<Float>) {
        switch format {
        case .f32: out.update(from: tensor!.data + row0 * columns, count: (row1 - row0) * columns)
        case .f16: chk_rows_f16(data.assumingMemoryBound(to: UInt16.self), columns, row0, row1, out)
        case .bf16: chk_rows_bf16(data.assumingMemoryBound(to: UInt16.self), columns, row0, row1, out)
        case .q8_0: chk_rows_q8_0(data.assumingMemoryBound(to: Int8.self), scales!, columns, row0, row1, out)
        case .q6_0: chk_rows_q6_0(data.assumingMemoryBound(to: UInt8.self), scales!, columns, row0, row1, out)
        case .q4_0: chk_rows_q4_0(data.assumingMemoryBound(to: UInt8.self), scales!, columns, row0, row1, out)
        }
    }

    /// The whole matrix as a float32 tensor (a copy unless already f32): for inspection and export.
    public func widened() -> Tensor {
        if let tensor { return tensor }
        let out = Tensor(zeros: [rows, columns])
        widenRows(0, rows, into: out.data)
        return out
    }

    /// y = x · Wᵀ + b into `out` [rows of x, self.rows].
    public func apply(_ x: Tensor, bias: Tensor?, into out: Tensor) {
        let tokens = x.rows
        precondition(x.columns == columns, "linear: input width \(x.columns) does not match weight [\(rows), \(columns)]")
        checkLinearOutput(out, rows: tokens, outputs: rows, bias: bias)
        guard tokens > 0 else { return }
        // Batches: the kernels' GEMM converts the stored format while packing (AVX-512 or AVX2); without,
        // float32 goes to sgemm (`linear` tries the GEMM first) and other formats are widened a tile
        // at a time.
        if tokens > rowByRowLimit {
            if let tensor { return linear(x, weight: tensor, bias: bias, into: out) }
            if chk_gemm_nt(kernelFormat, data, scales, rows, columns, bias?.data, x.data, columns, tokens, out.data, rows,
                           0, Int32(ComputeThreads.current)) != 0 { return }
        }
        // A few rows: the matrix-vector kernels read the weights at memory speed (BLAS's sgemm with
        // one row does not), every row in one pass, which for such small batches costs less than a GEMM.
        if tokens <= rowByRowLimit {
            var part = matvecPart(into: out.data, bias: bias?.data)
            chk_matvec_rows(&part, 1, x.data, columns, tokens, columns, Int32(ComputeThreads.current))
        } else {
            tiledProduct(x, out)
            if let bias { addToRows(out.data, rows: tokens, bias) }
        }
    }

    /// out = x · W[:, range]ᵀ (+ bias), or out += … when `accumulate`: the product with a range of W's
    /// columns (whole blocks of 32 when quantized), x as wide as the range. A gated MLP's down
    /// projection goes a slice of the intermediate at a time this way, so that prefill never holds
    /// the whole [tokens, intermediate] activations (DecoderTransformer.mlpSliceWidth).
    public func apply(_ x: Tensor, columns range: Range<Int>, bias: Tensor?, accumulate: Bool, into out: Tensor) {
        let tokens = x.rows
        precondition(range.lowerBound >= 0 && range.upperBound <= columns && x.columns == range.count,
                     "linear: input width \(x.columns) for columns \(range) of weight [\(rows), \(columns)]")
        checkLinearOutput(out, rows: tokens, outputs: rows, bias: bias)
        if range == 0..<columns && !accumulate { return apply(x, bias: bias, into: out) }
        guard tokens > 0 else { return }
        if tokens > rowByRowLimit {
            var part = chk_gemm_part(format: kernelFormat, w: data, scales: scales, n: rows, bias: bias?.data, c: out.data, ldc: rows,
                                     accumulate: accumulate ? 1 : 0, wcols: columns, wk0: range.lowerBound)
            if chk_gemm_nt_parts(&part, 1, range.count, x.data, x.columns, tokens, Int32(ComputeThreads.current)) != 0 { return }
        }
        tiledProduct(x, out, columns: range, accumulate: accumulate)
        if let bias { addToRows(out.data, rows: tokens, bias) }
    }

    /// Rows `range` of this matrix, in place (no copy; it keeps this matrix's memory alive): a slice
    /// of an MLP's gate and up projections.
    public func rows(_ range: Range<Int>) -> WeightMatrix {
        precondition(range.lowerBound >= 0 && range.upperBound <= rows, "rows \(range) of weight [\(rows), \(columns)]")
        if range == 0..<rows { return self }
        if let tensor {
            let storage = TensorStorage(borrowing: tensor.data + range.lowerBound * columns, count: range.count * columns, owner: tensor.storage)
            return WeightMatrix(Tensor(shape: [range.count, columns], storage: storage))
        }
        return WeightMatrix(format: format, rows: range.count, columns: columns,
                            data: data + Self.valueBytes(format, rows: range.lowerBound, columns: columns),
                            scales: scales.map { $0 + range.lowerBound * columns / 32 }, owner: self)
    }

    /// One product of a group over the same input: the matrix, its optional bias, where it goes.
    public typealias Product = (matrix: WeightMatrix, bias: Tensor?, out: Tensor)

    /// Whether `p` multiplies rows of `x`: input width, output shape and bias length agree.
    static func fits(_ p: Product, _ x: Tensor) -> Bool {
        p.matrix.columns == x.columns && p.out.rows == x.rows && p.out.columns == p.matrix.rows
            && (p.bias?.count ?? p.matrix.rows) == p.matrix.rows
    }

    /// y_i = x · W_iᵀ + b_i for several matrices of the same input (q/k/v, gate/up). On the kernels'
    /// GEMM, the weight blocks of all of them are shared out together over the threads (better
    /// balanced than one product after another); otherwise one `apply` each.
    public static func apply(_ x: Tensor, _ products: [Product]) {
        let tokens = x.rows
        if products.allSatisfy({ tokens > $0.matrix.rowByRowLimit && fits($0, x) }), products.count <= Int(CHK_GEMM_PARTS) {
            var parts: [chk_gemm_part] = products.map { p in
                chk_gemm_part(format: p.matrix.kernelFormat, w: p.matrix.data, scales: p.matrix.scales, n: p.matrix.rows,
                              bias: p.bias?.data, c: p.out.data, ldc: p.matrix.rows, accumulate: 0, wcols: 0, wk0: 0)
            }
            if chk_gemm_nt_parts(&parts, Int32(parts.count), x.columns, x.data, x.columns, tokens, Int32(ComputeThreads.current)) != 0 {
                return
            }
        }
        for p in products { p.matrix.apply(x, bias: p.bias, into: p.out) }
    }

    /// Two or three products of the same input (q/k/v, gate/up). Batches go to `apply(_:_:)`;
    /// decoded rows (up to the matrices' row-by-row limit) take one threaded pass over all the
    /// matrices' rows (chk_matvec_rows), without allocating: decode calls this for every layer of
    /// every token.
    public static func apply(_ x: Tensor, _ a: Product, _ b: Product, _ c: Product? = nil) {
        let tokens = x.rows
        guard tokens <= min(a.matrix.rowByRowLimit, b.matrix.rowByRowLimit, c?.matrix.rowByRowLimit ?? .max) else {
            return apply(x, c.map { [a, b, $0] } ?? [a, b])
        }
        func check(_ p: Product) {
            precondition(fits(p, x), "linear: input \(x.shape), weight [\(p.matrix.rows), \(p.matrix.columns)], output \(p.out.shape)")
        }
        func part(_ p: Product) -> chk_matvec_part { p.matrix.matvecPart(into: p.out.data, bias: p.bias?.data) }
        check(a); check(b); if let c { check(c) }
        withUnsafeTemporaryAllocation(of: chk_matvec_part.self, capacity: 3) { parts in
            parts[0] = part(a)
            parts[1] = part(b)
            if let c { parts[2] = part(c) }
            chk_matvec_rows(parts.baseAddress, c == nil ? 2 : 3, x.data, x.columns, tokens, x.columns, Int32(ComputeThreads.current))
        }
    }

    /// Lets the thread pool's waiting workers prefetch the rows each starts the decode product of
    /// these matrices with (`apply(_:_:_:_:)` of rows up to their limit, or `apply(_:bias:into:)`), while
    /// the caller works alone before it (norms, rotary, the KV append): memory would otherwise
    /// idle then. Nothing else changes: a product not run next only cost the prefetches.
    /// Without allocating (decode calls it for every product of every token), as `apply(_:_:_:_:)`.
    public static func prefetchDecodeProduct(_ a: WeightMatrix, _ b: WeightMatrix? = nil, _ c: WeightMatrix? = nil) {
        guard b.map({ $0.columns == a.columns }) ?? true, c.map({ $0.columns == a.columns }) ?? true else { return }
        withUnsafeTemporaryAllocation(of: chk_matvec_part.self, capacity: 3) { parts in
            var count = 0
            for m in [a, b, c] where m != nil {  // (a literal of optionals the optimizer keeps off the heap)
                parts[count] = m!.matvecPart(into: nil, bias: nil); count += 1
            }
            chk_prefetch_product(parts.baseAddress, Int32(count), a.columns, Int32(ComputeThreads.current), prefetchBytes)
        }
    }

    /// At most this much of a product's rows (or of an attention's keys and values) a waiting worker
    /// prefetches (an eighth of a 2 MiB L2).
    static let prefetchBytes = 256 << 10

    /// This matrix as one part of a matrix-vector product (chk_matvec_rows), its results into `y`
    /// (nil for a prefetch hint) plus `bias`.
    func matvecPart(into y: UnsafeMutablePointer<Float>?, bias: UnsafePointer<Float>?) -> chk_matvec_part {
        chk_matvec_part(format: kernelFormat, w: data, scales: scales, rows: rows, y: y, bias: bias)
    }

    var kernelFormat: chk_format {
        switch format {
        case .f32: return CHK_F32
        case .f16: return CHK_F16
        case .bf16: return CHK_BF16
        case .q8_0: return CHK_Q8_0
        case .q6_0: return CHK_Q6_0
        case .q4_0: return CHK_Q4_0
        }
    }

    /// Prefill: widen `tile` rows of W at a time (in parallel) and sgemm them (their columns `range`)
    /// against all of x — quantized weights against x rounded through decode's int8 blocks, bf16
    /// weights against x rounded to bfloat16, as the kernels multiply them (chk_round_activation).
    func tiledProduct(_ x: Tensor, _ out: Tensor, columns range: Range<Int>? = nil, accumulate: Bool = false) {
        let tokens = x.rows, range = range ?? 0..<columns
        if let tensor {  // float32 needs no widening
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(tokens), Int32(rows), Int32(range.count), 1, x.data,
                        Int32(x.columns), tensor.data + range.lowerBound, Int32(columns), accumulate ? 1 : 0, out.data, Int32(rows))
            return
        }
        var x = x
        if format.isQuantized || format == .bf16 {
            let rounded = Tensor(zeros: [tokens, x.columns])
            chk_round_activation(kernelFormat, x.data, x.columns, tokens, x.columns, rounded.data, x.columns, Int32(ComputeThreads.current))
            x = rounded
        }
        let tile = min(rows, max(64, (1 << 20) / max(columns, 1) / 16 * 16))  // about 4 MiB of float32 per tile
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: tile * columns)
        defer { scratch.deallocate() }
        var row0 = 0
        while row0 < rows {
            let row1 = min(rows, row0 + tile), n = row1 - row0
            ParallelRows.run(n, minimumPerThread: 8) { a, b in
                self.widenRows(row0 + a, row0 + b, into: scratch + a * self.columns)
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(tokens), Int32(n), Int32(range.count), 1, x.data,
                        Int32(x.columns), scratch + range.lowerBound, Int32(columns), accumulate ? 1 : 0, out.data + row0, Int32(rows))
            row0 = row1
        }
    }
}

extension WeightMatrix {
    /// Bytes of the stored values (without scales) and of the float16 scales, for writing files.
    public var valueBytes: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: data, count: Self.valueBytes(format, rows: rows, columns: columns))
    }
    public var scaleBytes: UnsafeRawBufferPointer? {
        scales.map { UnsafeRawBufferPointer(start: $0, count: Self.scaleBytes(format, rows: rows, columns: columns)) }
    }
}

extension ComputeThreads {
    /// The CPU features the kernels use on this machine, and the kernel variant chosen.
    public static var cpuFeatures: String { String(cString: chk_cpu_features()) }
    public static var kernelVariant: String { String(cString: chk_kernel_variant()) }
    /// The product bf16 matrices' GEMMs take here ("bf16-dot" or "float").
    public static var bf16GEMM: String { String(cString: chk_bf16_gemm_kind()) }
    /// The kernel set OpenBLAS chose for this CPU ("SkylakeX", "Haswell", ...).
    public static var blasCore: String { openblas_get_corename().map { String(cString: $0) } ?? "unknown" }

    /// OpenBLAS picks its kernels once, when it loads, from OPENBLAS_CORETYPE or CPUID; under some
    /// hypervisors it misreads an AVX-512 CPU as a pre-AVX one ("Prescott") and runs sgemm ~4× slower.
    /// Returns the core type to set when that happened (then the process must restart to apply it).
    public static func blasCoreCorrection() -> String? {
        guard ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] == nil else { return nil }
        let preAVX2 = ["prescott", "core2", "penryn", "dunnington", "nehalem", "atom", "katmai", "coppermine",
                       "northwood", "banias", "unknown", "sandybridge"]
        guard preAVX2.contains(blasCore.lowercased()) else { return nil }
        let features = Set(cpuFeatures.split(separator: " "))
        if ["avx512f", "avx512bw", "avx512vl"].allSatisfy(features.contains) { return "SkylakeX" }
        if ["avx2", "fma"].allSatisfy(features.contains) { return "Haswell" }
        return nil
    }
}

/// Memory for the weights that decode streams (and, `dedicated`, for KV caches): regions aligned to
/// 2 MiB and advised into transparent huge pages, handed out in 64-byte-aligned pieces. Reading a
/// matrix then needs one TLB entry per 2 MiB instead of one per 4 KiB page (and no page walk every
/// 4 KiB of a stream): decode measured +5 % tokens/s (Qwen2-0.5B q4_0) to +13 % (TinyLlama f16)
/// against 4 KiB pages, in alternating runs. Where the kernel gives no huge pages, it is plain memory.
public enum WeightMemory {
    /// One region; a piece's `owner` keeps it alive, and it is freed with its last piece.
    final class Region: @unchecked Sendable {
        let base: UnsafeMutableRawPointer, size: Int
        var used = 0
        /// At least `bytes`, rounded up to whole huge pages.
        init?(bytes: Int) {
            let size = (max(bytes, 1) + hugePage - 1) / hugePage * hugePage
            var p: UnsafeMutableRawPointer?
            guard posix_memalign(&p, hugePage, size) == 0, let p else { return nil }
            base = p; self.size = size
            _ = madvise(p, size, MADV_HUGEPAGE)  // a hint: without it the memory is still good
        }
        deinit { free(base) }
    }

    static let hugePage = 2 << 20
    /// Pieces fill a region of this size (its untouched tail is never made resident).
    static let regionSize = 64 << 20
    private static let lock = NSLock()
    nonisolated(unsafe) private static weak var current: Region?

    /// A float32 [rows, columns] tensor in weight memory (its values undefined until written).
    public static func tensor(rows: Int, columns: Int) -> Tensor {
        let (pointer, owner) = allocate(rows * columns * 4)
        let storage = TensorStorage(borrowing: pointer.bindMemory(to: Float.self, capacity: rows * columns), count: rows * columns, owner: owner)
        return Tensor(shape: [rows, columns], storage: storage)
    }

    /// `bytes` of weight memory (64-byte aligned) and the object that keeps it allocated.
    public static func allocate(_ bytes: Int) -> (pointer: UnsafeMutableRawPointer, owner: AnyObject) {
        let size = (max(bytes, 1) + 63) / 64 * 64
        lock.lock(); defer { lock.unlock() }
        if let region = current, region.size - region.used >= size {
            defer { region.used += size }
            return (region.base + region.used, region)
        }
        guard let region = Region(bytes: max(regionSize, size)) else {
            let fallback = OwnedBytes(count: size)
            return (fallback.pointer, fallback)
        }
        region.used = size
        // A piece larger than a region gets one of its own; the current region keeps its room.
        if region.size == regionSize || current == nil { current = region }
        return (region.base, region)
    }

    /// `bytes` of zeroed memory in huge pages of its own (64-byte aligned) and the object that keeps
    /// it allocated: for memory that decode streams but that lives apart from the weights (a KV
    /// cache, made for one conversation: in a shared region it would stay allocated as long as the
    /// weights that share it). A last huge page only partly used is left to 4 KiB pages, so that
    /// what is resident is `bytes`, not up to 2 MiB more.
    public static func dedicated(_ bytes: Int) -> (pointer: UnsafeMutableRawPointer, owner: AnyObject) {
        let bytes = max(bytes, 1)
        let memory: (pointer: UnsafeMutableRawPointer, owner: AnyObject)
        if let region = Region(bytes: bytes) {
            let whole = bytes / hugePage * hugePage
            if whole < region.size { _ = madvise(region.base + whole, region.size - whole, MADV_NOHUGEPAGE) }
            region.used = region.size
            memory = (region.base, region)
        } else {
            let fallback = OwnedBytes(count: bytes)
            memory = (fallback.pointer, fallback)
        }
        memory.pointer.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        return memory
    }
}

/// Heap bytes (WeightMemory's fallback when a region cannot be had).
final class OwnedBytes: @unchecked Sendable {
    let pointer: UnsafeMutableRawPointer
    init(count: Int) { pointer = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1), alignment: 64) }
    deinit { pointer.deallocate() }
}

/// Splits row ranges over the compute threads (ComputeThreads.current), on the kernels' persistent pool.
public enum ParallelRows {
    /// `threads` defaults to the BLAS thread count.
    public static func run(_ rows: Int, minimumPerThread: Int = 16, threads available: Int? = nil, _ body: (Int, Int) -> Void) {
        let threads = min(available ?? ComputeThreads.current, max(1, rows / minimumPerThread))
        if threads <= 1 { body(0, rows); return }
        // A few chunks per thread, claimed dynamically, so that a delayed thread does not hold up the rest.
        let chunk = max(minimumPerThread, (rows + 4 * threads - 1) / (4 * threads))
        // The pool returns only after every chunk ran, so the non-escaping body is safe to share.
        withoutActuallyEscaping(body) { body in
            var work = body
            withUnsafeMutablePointer(to: &work) { pointer in
                chk_parallel_for(rows, chunk, Int32(threads), { context, begin, end in
                    context!.assumingMemoryBound(to: ((Int, Int) -> Void).self).pointee(begin, end)
                }, pointer)
            }
        }
    }
}

/// Measures main memory's read bandwidth over a buffer much larger than the caches, with the
/// fastest read loop found for the CPU (chk_read_pass: plain loads, prefetched ahead only with
/// AVX-512): the bound a bandwidth-bound decode is compared with. On a shared machine the figure
/// moves from one moment to the next, so each `measure()` is one short pass (about 20 ms) meant
/// to be paired with the work it is compared with.
public final class ReadBandwidthProbe {
    private let buffer: UnsafeMutablePointer<Float>
    private let region: WeightMemory.Region
    private let count: Int
    public let threads: Int

    /// nil when `bytes` cannot be allocated.
    public init?(bytes: Int = 512 << 20, threads: Int = ComputeThreads.current) {
        count = max(64, bytes / 4)
        // In huge pages like the weights (WeightMemory), so that decode is compared with a read of
        // the same kind of memory.
        guard let region = WeightMemory.Region(bytes: count * 4) else { return nil }
        self.region = region
        buffer = region.base.bindMemory(to: Float.self, capacity: count)
        // Non-zero: pages never written would all read one shared zero page.
        buffer.initialize(repeating: 1, count: count)
        self.threads = threads
    }

    /// One read of the whole buffer: GB/s.
    public func measure() -> Double { chk_read_pass(buffer, count, Int32(threads)) }
}

