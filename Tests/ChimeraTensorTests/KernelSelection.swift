import CChimeraKernels
import ChimeraTensor
import Testing

/// The suites that force a kernel variant (chk_force_portable, chk_force_avx2 — process-wide
/// switches) or check which variant ran. Nested here, they run one test at a time, so one suite's
/// forcing never lands in the middle of another's check.
@Suite(.serialized) enum KernelSelection {}

/// Forces the kernels a test of these suites runs on: "chosen" (as this CPU allows), "float" (the
/// float GEMM for quantized and bf16 weights), "bf16-dot" (the bfloat16 dot-product GEMM for bf16
/// weights, on any CPU with AVX-512 BF16), "no-gfni", "one-row" or "four-rows" (the AVX-512 decode
/// kernels' rows a pass, AMD's and Intel's choice), "avx2" or "portable". `releaseKernels` undoes it.
func forceKernels(_ variant: String) throws {
    switch variant {
    case "float": _ = chk_force_float_gemm(1)
    case "bf16-dot": try #require(chk_force_bf16_gemm(1) != 0, "this CPU has no AVX-512 BF16")
    case "no-gfni": _ = chk_force_no_gfni(1)
    case "one-row": chk_force_decode_rows(1)
    case "four-rows": chk_force_decode_rows(4)
    case "avx2": try #require(chk_force_avx2(1) != 0, "this CPU has no AVX2")
    case "portable": chk_force_portable(1)
    default: break
    }
}

func releaseKernels() {
    _ = chk_force_float_gemm(0); _ = chk_force_bf16_gemm(0); _ = chk_force_no_gfni(0); chk_force_decode_rows(0); _ = chk_force_avx2(0); chk_force_portable(0)
}

/// Whether this CPU can run the bfloat16 dot-product GEMM (AVX-512 BF16).
let hasBFloat16Dot = chk_force_bf16_gemm(0) != 0

/// Rows of x (`columns` of each, rows `ld` apart) as products of `format` weights multiply them, on
/// every path: rounded through int8 blocks for quantized weights, to bfloat16 for bf16, as they are
/// for f32 and f16.
func multipliedActivation(_ x: [Float], format: WeightFormat, rows: Int, columns: Int, ld: Int) -> [Float] {
    format.isQuantized ? roundedThroughInt8Blocks(x, rows: rows, columns: columns, ld: ld) : format == .bf16 ? roundedToBFloat16(x) : x
}

/// x as products of bf16 weights multiply it, on every path: each value rounded to bfloat16
/// (nearest, ties to even; written out here, apart from the kernels, as their reference).
func roundedToBFloat16(_ x: [Float]) -> [Float] {
    x.map { v in
        guard !v.isNaN else { return v }
        let bits = v.bitPattern
        return Float(bitPattern: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) & 0xFFFF_0000)
    }
}

/// Seeded values in [-scale, scale): the inputs and weights of the kernel tests.
func seededValues(_ count: Int, seed: UInt64, scale: Float = 1) -> [Float] {
    var g = SplitMix64(seed: seed)
    return (0..<count).map { _ in g.uniform(scale) }
}

/// Rows of x (`columns` of each, rows `ld` apart; columns a multiple of 32) as products of quantized
/// weights multiply them, on every path: rounded through int8 blocks of 32 — d = max|x| / 127,
/// q = x · (1/d) rounded to nearest (ties to even), x ≈ q · d. Written out here, apart from the
/// kernels, as the reference they must match. The gaps between rows are kept as they are.
func roundedThroughInt8Blocks(_ x: [Float], rows: Int, columns: Int, ld: Int) -> [Float] {
    precondition(columns % 32 == 0)
    var out = x
    for r in 0..<rows {
        for start in stride(from: r * ld, to: r * ld + columns, by: 32) {
            let block = x[start..<start + 32]
            let d = block.map { abs($0) }.max()! / 127, id: Float = d > 0 ? 1 / d : 0
            for i in start..<start + 32 { out[i] = min(max((x[i] * id).rounded(.toNearestOrEven), -128), 127) * d }
        }
    }
    return out
}
