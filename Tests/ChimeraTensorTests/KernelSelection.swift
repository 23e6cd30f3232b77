import Testing

/// The suites that force a kernel variant (chk_force_portable, chk_force_avx2 — process-wide
/// switches) or check which variant ran. Nested here, they run one test at a time, so one suite's
/// forcing never lands in the middle of another's check.
@Suite(.serialized) enum KernelSelection {}
