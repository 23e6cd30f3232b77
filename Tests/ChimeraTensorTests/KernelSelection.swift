import ChimeraTensor
import Testing

/// The suites that force a kernel variant (chk_force_portable, chk_force_avx2 — process-wide
/// switches) or check which variant ran. Nested here, they run one test at a time, so one suite's
/// forcing never lands in the middle of another's check.
@Suite(.serialized) enum KernelSelection {}

/// Seeded values in [-scale, scale): the inputs and weights of the kernel tests.
func seededValues(_ count: Int, seed: UInt64, scale: Float = 1) -> [Float] {
    var g = SplitMix64(seed: seed)
    return (0..<count).map { _ in g.uniform(scale) }
}
