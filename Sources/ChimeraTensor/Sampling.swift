import CChimeraKernels

// The numeric half of sampling (Chimera's Sampler holds the options and the generator): top-k's
// floor, weights from logits, the cut that keeps the fewest largest weights meeting a need (top-p),
// and a weighted draw among the kept ones. Each is a few vector passes over the vocabulary
// (chk_top_k_floor, chk_sampling_weights, chk_tally_at_least, chk_gather_range); only a band of at
// most `WeightCut.band` values near a cut's boundary, and one block of the draw, are handled one by
// one. Nothing is sorted.

/// Which of a row of non-negative weights a sampler keeps: every weight above `threshold`, and of
/// those equal to it the first `ties` in index order (all of them when `ties` is `Int.max`).
public struct WeightCut: Equatable, Sendable {
    public var threshold: Float
    public var ties: Int
    public init(threshold: Float, ties: Int) { self.threshold = threshold; self.ties = ties }
    /// Every weight (NaN ones aside).
    public static let all = WeightCut(threshold: 0, ties: .max)
    /// At most this many values near the boundary are selected one by one (see `largestCut`).
    static let band = 1024
}

/// transformers' repetition penalty over a row of `count` logits: each of the `seen` token ids (each
/// once, any at or past `count` skipped) has its logit divided by `penalty`, or multiplied when
/// negative. (Here rather than in the Sampler: this module is optimized in debug builds too, whose
/// per-token allocation test a Swift loop left unoptimized would fail.)
public func applyRepetitionPenalty(_ logits: UnsafeMutablePointer<Float>, count: Int, seen: UnsafeBufferPointer<Int32>, penalty: Float) {
    for token in seen where Int(token) < count {
        let logit = logits[Int(token)]
        logits[Int(token)] = logit < 0 ? logit * penalty : logit / penalty
    }
}

/// weights[i] = exp((logits[i] − max) / temperature) over `count` logits, `max` their largest (its
/// weight is exactly 1); returns their sum.
public func samplingWeights(_ logits: UnsafePointer<Float>, count: Int, max: Float, temperature: Float,
                            into weights: UnsafeMutablePointer<Float>) -> Float {
    chk_sampling_weights(logits, count, max, 1 / temperature, weights)
}

/// How many of `count` values are at least `floor`, and their sum.
public func tally(_ values: UnsafePointer<Float>, count: Int, atLeast floor: Float) -> (count: Int, sum: Float) {
    var n = 0
    let sum = chk_tally_at_least(values, count, floor, &n)
    return (n, sum)
}

/// The k-th largest of `count` values (NaN skipped; -inf when fewer than k are larger than -inf),
/// in one pass: top-k's floor. `buffer` holds `topKBufferCount(k)` floats.
public func topKFloor(_ values: UnsafePointer<Float>, count: Int, k: Int, buffer: UnsafeMutablePointer<Float>) -> Float {
    chk_top_k_floor(values, count, k, buffer)
}

/// The floats `topKFloor` needs for its buffer.
public func topKBufferCount(_ k: Int) -> Int { max(4 * k, 1024) + 16 }

/// Copies the values in [lo, hi), in index order, to `into` (and their indices to `ids`); returns
/// how many. Both hold `count`.
public func gather(_ values: UnsafePointer<Float>, count: Int, from lo: Float, below hi: Float,
                   into out: UnsafeMutablePointer<Float>, ids: UnsafeMutablePointer<Int32>? = nil) -> Int {
    chk_gather_range(values, count, lo, hi, out, ids)
}

/// What a cut must keep: the fewest largest values that number at least k (top-k), or whose sum
/// reaches s (top-p).
public enum CutNeed: Sendable {
    case count(Int)
    case sum(Float)

    func met(_ taken: Int, _ sum: Float) -> Bool {
        switch self {
        case .count(let k): return taken >= k
        case .sum(let s): return sum >= s
        }
    }

    /// Where between lo and hi (0 ... 1) the need is met, if what is taken grows linearly from hi
    /// down to lo.
    func fraction(lo: (count: Int, sum: Float), hi: (count: Int, sum: Float)) -> Float {
        switch self {
        case .count(let k): return Float(lo.count - k) / Float(max(lo.count - hi.count, 1))
        case .sum(let s): return (lo.sum - s) / max(lo.sum - hi.sum, .leastNormalMagnitude)
        }
    }
}

/// The cut that keeps the fewest largest of `count` non-negative values that `need` asks for;
/// every value when even all of them fall short. Ties at the boundary are taken in index order,
/// one at a time. No value exceeds `largest`.
///
/// The boundary is bracketed by floors falling from the top, 1/2, 1/4, 1/16, 1/256 ... of
/// `largest` (a top-k or a nucleus usually ends near the top), then narrowed, one vector tally a
/// step, to a band [lo, hi) of at most `WeightCut.band` values (or one float value), which
/// quickselect settles. The steps alternate between the floor where the need would be met if
/// values were spread evenly over [lo, hi) (a random model's logits are nearly flat, and a
/// vocabulary's tail is smooth) and the middle of the threshold's bit patterns (monotone for
/// non-negative floats), which bounds the steps whatever the spread. Whenever the band holds a
/// quarter or less of the values being tallied, it is gathered into `scratch` (room for `count`)
/// and the steps go on over it alone, the values above it counted apart. `total`, when the caller
/// has it (the values' sum, none of them NaN), spares the first tally.
public func largestCut(_ values: UnsafePointer<Float>, count: Int, largest: Float = .infinity, total: Float? = nil,
                       scratch: UnsafeMutablePointer<Float>, need: CutNeed) -> WeightCut {
    var lo: Float = 0, hi = largest.nextUp
    var below = total.map { (count: count, sum: $0) } ?? tally(values, count: count, atLeast: lo)  // at or above lo: enough
    guard need.met(below.count, below.sum) else { return .all }
    var above = (count: 0, sum: Float(0))  // at or above hi: not enough
    var tallied = values, talliedCount = count, outside = (count: 0, sum: Float(0))  // outside: above what is tallied
    func step(_ floor: Float) {
        var (taken, sum) = tally(tallied, count: talliedCount, atLeast: floor)
        taken += outside.count; sum += outside.sum
        if need.met(taken, sum) { lo = floor; below = (taken, sum) } else { hi = floor; above = (taken, sum) }
    }
    func gatherBand() {
        talliedCount = gather(tallied, count: talliedCount, from: lo, below: hi, into: scratch)  // in place once in scratch
        tallied = UnsafePointer(scratch); outside = above
    }
    if largest.isFinite && largest > 0 {
        var fall = 1
        while lo == 0 && fall < 128 {
            let floor = largest * Float(sign: .plus, exponent: -fall, significand: 1)
            guard floor > 0 else { break }
            step(floor); fall *= 2
        }
    }
    var interpolate = hi.isFinite
    while below.count - above.count > WeightCut.band && hi.bitPattern - lo.bitPattern > 1 {
        if (below.count - above.count) * 4 <= talliedCount { gatherBand() }
        var floor = Float(bitPattern: lo.bitPattern + (hi.bitPattern - lo.bitPattern) / 2)
        if interpolate {
            let even = lo + (hi - lo) * need.fraction(lo: below, hi: above)
            if even > lo && even < hi { floor = even }
        }
        interpolate.toggle()
        step(floor)
    }
    gatherBand()
    return selectInBand(scratch, count: talliedCount, above: above, need: need) ?? WeightCut(threshold: lo, ties: .max)
}

/// Quickselect over the band's values v[0 ..< count], with `above` (the count and sum of the values
/// above the band) already taken: three-way partitions around a middle value, the upper part taken
/// whole when it is not yet enough, the pivot's equals one at a time. nil when all of the band is
/// not enough (float rounding against the tally that chose the band).
private func selectInBand(_ v: UnsafeMutablePointer<Float>, count: Int, above: (count: Int, sum: Float),
                          need: CutNeed) -> WeightCut? {
    var lo = 0, hi = count, sum = above.sum  // undecided: v[lo ..< hi]; taken: v[hi ..< count]
    while lo < hi {
        let pivot = v[lo + (hi - lo) / 2]
        // Into v[lo ..< less] (below the pivot), v[less ..< greater] (equal), v[greater ..< hi] (above).
        var less = lo, i = lo, greater = hi
        while i < greater {
            let x = v[i]
            if x < pivot { (v[less], v[i]) = (x, v[less]); less += 1; i += 1 }
            else if x > pivot { greater -= 1; (v[i], v[greater]) = (v[greater], x) }
            else { i += 1 }
        }
        var upper: Float = 0
        for j in greater..<hi { upper += v[j] }
        if need.met(above.count + count - greater, sum + upper) { lo = greater; continue }  // the boundary is above the pivot
        sum += upper; hi = greater
        var ties = 0
        while hi > less {
            hi -= 1; sum += pivot; ties += 1
            if need.met(above.count + count - hi, sum) { return WeightCut(threshold: pivot, ties: ties) }
        }
    }
    return nil
}

/// An index drawn among the values the cut keeps, each with probability proportional to it: the
/// first at which the kept values' running sum, in index order, passes draw × their total
/// (draw in [0, 1)). nil when the kept values sum to zero (or are NaN).
///
/// Blocks of values are summed by vector tallies (a running float sum a value at a time was most
/// of a sampled token's cost over a whole vocabulary); only the block where the sum passes the
/// target is walked value by value.
public func drawIndex(_ values: UnsafePointer<Float>, count: Int, cut: WeightCut, draw: Float) -> Int? {
    let block = 1024, blocks = (count + block - 1) / block, inclusive = cut.ties == .max
    let above = inclusive ? cut.threshold : cut.threshold.nextUp
    return withUnsafeTemporaryAllocation(of: (sum: Float, ties: Int).self, capacity: max(blocks, 1)) { kept in
        // Each block's kept sum, and how many ties at the threshold it takes (the first ones).
        var total: Float = 0, tiesLeft = cut.ties
        for b in 0..<blocks {
            let start = b * block, n = min(block, count - start)
            var (taken, sum) = tally(values + start, count: n, atLeast: above), ties = 0
            if !inclusive && tiesLeft > 0 {
                ties = min(tally(values + start, count: n, atLeast: cut.threshold).count - taken, tiesLeft)
                sum += Float(ties) * cut.threshold; tiesLeft -= ties
            }
            kept[b] = (sum, ties); total += sum
        }
        guard total > 0, total.isFinite else { return nil }
        var left = draw * total, b = 0
        tiesLeft = cut.ties
        while b + 1 < blocks && left >= kept[b].sum { left -= kept[b].sum; tiesLeft -= kept[b].ties; b += 1 }
        // The target falls in block b (or rounding carried it past the last block): walk it.
        var last: Int?
        for i in b * block..<min(b * block + block, count) {
            let x = values[i]
            guard x > cut.threshold || (x == cut.threshold && (inclusive || tiesLeft > 0)) else { continue }
            if x == cut.threshold && !inclusive { tiesLeft -= 1 }
            left -= x; last = i
            if left < 0 { return i }
        }
        return last  // rounding left a sliver past the block's last kept value
    }
}
