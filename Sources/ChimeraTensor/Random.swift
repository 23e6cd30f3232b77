import Foundation

/// Small, fast, seedable generator for fresh connector weights (reproducible across runs).
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    private static let step: UInt64 = 0x9E37_79B9_7F4A_7C15
    public mutating func next() -> UInt64 {
        state &+= Self.step
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [-bound, bound).
    public mutating func uniform(_ bound: Float) -> Float {
        Float(unit()) * 2 * bound - bound
    }

    /// Uniform in [0, 1).
    public mutating func unit() -> Double { Double(next() >> 11) / Double(1 << 53) }

    /// `out[0 ..< count]` = what `count` calls of `uniform(bound)` return, in order, computed on the
    /// compute threads (each value depends only on the state a whole number of steps on, so a
    /// thread can start anywhere); the generator ends `count` values on, as after those calls.
    public mutating func fillUniform(_ out: UnsafeMutablePointer<Float>, count: Int, bound: Float) {
        let start = self
        ParallelRows.run(count, minimumPerThread: 1 << 16) { begin, end in
            var generator = start.advanced(by: begin)
            for i in begin..<end { out[i] = generator.uniform(bound) }
        }
        self = start.advanced(by: count)
    }

    private func advanced(by steps: Int) -> SplitMix64 {
        var moved = self
        moved.state &+= Self.step &* UInt64(steps)
        return moved
    }
}
