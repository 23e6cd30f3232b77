// Bicubic resampling that reproduces Pillow's `Image.resize(..., BICUBIC)` on 8-bit RGB
// bit-for-bit (libImaging/Resample.c): separable, horizontal pass first then vertical
// (except the vertical-first case below), a pass skipped when that dimension is unchanged, cubic kernel a = -0.5 widened by the
// downscale factor (antialiasing), coefficients normalised in double then converted to
// fixed point with 22 fractional bits, rounding + clipping to uint8 after each pass.

enum PillowResample {
    static let precisionBits: Int32 = 22  // 32 - 8 - 2

    /// Pillow's `bicubic_filter` (a = -0.5).
    @inline(__always)
    static func bicubic(_ x0: Double) -> Double {
        let a = -0.5
        let x = x0 < 0.0 ? -x0 : x0
        if x < 1.0 { return ((a + 2.0) * x - (a + 3.0)) * x * x + 1 }
        if x < 2.0 { return (((x - 5) * x + 8) * x - 4) * a }
        return 0.0
    }

    struct Coefficients {
        var ksize: Int
        /// (xmin, count) per output sample.
        var bounds: [Int]
        /// ksize fixed-point weights per output sample.
        var weights: [Int32]
    }

    /// `precompute_coeffs` + `normalize_coeffs_8bpc` for box [0, inSize), for the output samples
    /// `outputs` (default: all `outSize`), indexed from 0: each sample's are computed on their own.
    static func coefficients(inSize: Int, outSize: Int, outputs: Range<Int>? = nil) -> Coefficients {
        let outputs = outputs ?? 0..<outSize
        let support0 = 2.0  // bicubic support
        let in0: Double = 0, in1 = Double(Float(inSize))  // Pillow's box is float[4]
        let scale = (in1 - in0) / Double(outSize)
        let filterscale = max(scale, 1.0)
        let support = support0 * filterscale
        let ksize = Int(support.rounded(.up)) * 2 + 1
        var bounds = [Int](repeating: 0, count: outputs.count * 2)
        var weights = [Int32](repeating: 0, count: outputs.count * ksize)
        var k = [Double](repeating: 0, count: ksize)
        let ss = 1.0 / filterscale
        let one = Double(1 << precisionBits)
        for (index, xx) in outputs.enumerated() {
            let center = in0 + (Double(xx) + 0.5) * scale
            var ww = 0.0
            var xmin = Int(center - support + 0.5)  // C (int) cast truncates toward zero
            if xmin < 0 { xmin = 0 }
            var xmax = Int(center + support + 0.5)
            if xmax > inSize { xmax = inSize }
            xmax -= xmin
            for x in 0..<max(xmax, 0) {
                let w = bicubic((Double(x + xmin) - center + 0.5) * ss)
                k[x] = w
                ww += w
            }
            for x in 0..<max(xmax, 0) {
                var v = k[x]
                if ww != 0.0 { v /= ww }
                weights[index * ksize + x] = v < 0 ? Int32(-0.5 + v * one) : Int32(0.5 + v * one)
            }
            bounds[index * 2] = xmin
            bounds[index * 2 + 1] = max(xmax, 0)
        }
        return Coefficients(ksize: ksize, bounds: bounds, weights: weights)
    }

    @inline(__always)
    static func clip8(_ v: Int32) -> UInt8 {
        let s = v >> precisionBits
        return s <= 0 ? 0 : (s >= 255 ? 255 : UInt8(truncatingIfNeeded: s))
    }

    /// Resizes interleaved 8-bit RGB to `width` x `height` like Pillow's BICUBIC resize. With
    /// `columns` / `rows`, only those of the resized image are made along an axis that is resized
    /// (an axis left as it is stays whole): what a centre crop keeps, the same pixels, without the
    /// whole resized image (a 1 x 65535 strip resized to 64 x 4194240 took 1 GB for 64 x 64 kept).
    static func resizeBicubic(_ image: RGBImage, width fullW: Int, height fullH: Int,
                              columns: Range<Int>? = nil, rows: Range<Int>? = nil) -> RGBImage {
        precondition(fullW > 0 && fullH > 0, "resize target must be positive, got \(fullW)x\(fullH)")
        let inW = image.width, inH = image.height
        if inW == fullW && inH == fullH { return RGBImage(width: inW, height: inH, pixels: image.pixels) }
        let needHorizontal = fullW != inW
        let needVertical = fullH != inH
        let horiz = coefficients(inSize: inW, outSize: fullW, outputs: needHorizontal ? columns : nil)
        var vert = coefficients(inSize: inH, outSize: fullH, outputs: needVertical ? rows : nil)
        let outW = horiz.bounds.count / 2, outH = vert.bounds.count / 2

        // Pillow 13 (PR #9549) runs the vertical pass first when the height shrinks by more than
        // twice as many pixels as the width; pass order changes the uint8 rounding, so follow it.
        // (Verified against Pillow 13.0.0 on 500 random size pairs; older Pillow is always
        // horizontal-first, which gives identical results whenever this condition is false.)
        let verticalFirst = needHorizontal && needVertical && fullH < inH && (inH - fullH) > 2 * (inW - fullW)
        var current = image.pixels
        var curW = inW, curH = inH
        if verticalFirst {
            var temp = [UInt8](repeating: 0, count: inW * outH * 3)
            verticalPass(src: current, width: inW, dst: &temp, dstHeight: outH, coeffs: vert)
            var out = [UInt8](repeating: 0, count: outW * outH * 3)
            horizontalPass(src: temp, srcWidth: inW, firstRow: 0, rows: outH,
                           dst: &out, dstWidth: outW, coeffs: horiz)
            return RGBImage(width: outW, height: outH, pixels: out)
        }
        if needHorizontal {
            // Only rows the vertical pass will read.
            let yFirst = vert.bounds[0]
            let yLast = vert.bounds[outH * 2 - 2] + vert.bounds[outH * 2 - 1]
            for i in 0..<outH { vert.bounds[i * 2] -= yFirst }
            let rows = yLast - yFirst
            var temp = [UInt8](repeating: 0, count: outW * rows * 3)
            horizontalPass(src: current, srcWidth: inW, firstRow: yFirst, rows: rows,
                           dst: &temp, dstWidth: outW, coeffs: horiz)
            current = temp
            curW = outW
            curH = rows
        }
        if needVertical {
            var out = [UInt8](repeating: 0, count: curW * outH * 3)
            verticalPass(src: current, width: curW, dst: &out, dstHeight: outH, coeffs: vert)
            current = out
            curH = outH
        }
        return RGBImage(width: curW, height: curH, pixels: current)
    }

    private static func horizontalPass(src: [UInt8], srcWidth: Int, firstRow: Int, rows: Int,
                                       dst: inout [UInt8], dstWidth: Int, coeffs: Coefficients) {
        let ksize = coeffs.ksize
        let half: Int32 = 1 << (precisionBits - 1)
        src.withUnsafeBufferPointer { s in
            dst.withUnsafeMutableBufferPointer { d in
                coeffs.bounds.withUnsafeBufferPointer { bounds in
                    coeffs.weights.withUnsafeBufferPointer { kk in
                        let sp = s.baseAddress!, dp = d.baseAddress!, kp = kk.baseAddress!
                        for yy in 0..<rows {
                            let srow = sp + (yy + firstRow) * srcWidth * 3
                            let drow = dp + yy * dstWidth * 3
                            for xx in 0..<dstWidth {
                                let xmin = bounds[xx * 2], xcount = bounds[xx * 2 + 1]
                                let k = kp + xx * ksize
                                var s0 = half, s1 = half, s2 = half
                                var p = srow + xmin * 3
                                for x in 0..<xcount {
                                    let w = k[x]
                                    s0 = s0 &+ Int32(p[0]) &* w
                                    s1 = s1 &+ Int32(p[1]) &* w
                                    s2 = s2 &+ Int32(p[2]) &* w
                                    p += 3
                                }
                                drow[xx * 3] = clip8(s0)
                                drow[xx * 3 + 1] = clip8(s1)
                                drow[xx * 3 + 2] = clip8(s2)
                            }
                        }
                    }
                }
            }
        }
    }

    private static func verticalPass(src: [UInt8], width: Int, dst: inout [UInt8], dstHeight: Int,
                                     coeffs: Coefficients) {
        let ksize = coeffs.ksize
        let half: Int32 = 1 << (precisionBits - 1)
        let rowLen = width * 3
        src.withUnsafeBufferPointer { s in
            dst.withUnsafeMutableBufferPointer { d in
                coeffs.bounds.withUnsafeBufferPointer { bounds in
                    coeffs.weights.withUnsafeBufferPointer { kk in
                        let sp = s.baseAddress!, dp = d.baseAddress!, kp = kk.baseAddress!
                        // Accumulate whole rows at a time (cache friendly); identical sums to
                        // Pillow's per-pixel loop since integer addition order does not matter.
                        let acc = UnsafeMutablePointer<Int32>.allocate(capacity: rowLen)
                        defer { acc.deallocate() }
                        for yy in 0..<dstHeight {
                            let ymin = bounds[yy * 2], ycount = bounds[yy * 2 + 1]
                            let k = kp + yy * ksize
                            acc.initialize(repeating: half, count: rowLen)
                            for y in 0..<ycount {
                                let w = k[y]
                                let srow = sp + (y + ymin) * rowLen
                                for i in 0..<rowLen {
                                    acc[i] = acc[i] &+ Int32(srow[i]) &* w
                                }
                            }
                            let drow = dp + yy * rowLen
                            for i in 0..<rowLen { drow[i] = clip8(acc[i]) }
                        }
                    }
                }
            }
        }
    }
}
