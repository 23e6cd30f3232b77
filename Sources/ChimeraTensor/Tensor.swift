import Foundation

/// Contiguous float32 memory behind a tensor: either owned (allocated here) or borrowed
/// from something that outlives it (a memory-mapped weight file kept alive by `owner`).
public final class TensorStorage: @unchecked Sendable {
    public let base: UnsafeMutablePointer<Float>
    public let count: Int
    private let owner: AnyObject?
    private let ownsMemory: Bool

    /// Allocates `count` zeroed floats, 64-byte aligned for SIMD kernels.
    public init(count: Int) {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1) * 4, alignment: 64)
        raw.initializeMemory(as: Float.self, repeating: 0, count: max(count, 1))
        base = raw.assumingMemoryBound(to: Float.self)
        self.count = count
        owner = nil
        ownsMemory = true
    }

    /// Borrows memory owned by `owner` (no copy).
    public init(borrowing pointer: UnsafeMutablePointer<Float>, count: Int, owner: AnyObject) {
        base = pointer
        self.count = count
        self.owner = owner
        ownsMemory = false
    }

    deinit {
        if ownsMemory { UnsafeMutableRawPointer(base).deallocate() }
    }
}

/// A dense, row-major float32 tensor. Tensors share storage when reshaped; operations in
/// Ops.swift return new tensors unless their name ends in `InPlace`.
public struct Tensor: @unchecked Sendable, CustomStringConvertible {
    public private(set) var shape: [Int]
    public let storage: TensorStorage

    public init(zeros shape: [Int]) {
        self.shape = shape
        storage = TensorStorage(count: shape.reduce(1, *))
    }

    public init(shape: [Int], values: [Float]) {
        precondition(shape.reduce(1, *) == values.count, "Tensor(shape:values:) count mismatch")
        self.init(zeros: shape)
        values.withUnsafeBufferPointer { storage.base.update(from: $0.baseAddress!, count: values.count) }
    }

    public init(shape: [Int], storage: TensorStorage) {
        precondition(shape.reduce(1, *) <= storage.count, "Tensor(shape:storage:) storage too small")
        self.shape = shape
        self.storage = storage
    }

    public var count: Int { shape.reduce(1, *) }
    public var rank: Int { shape.count }
    public var data: UnsafeMutablePointer<Float> { storage.base }
    /// Size of the last dimension (the row length of the tensor seen as a matrix).
    public var columns: Int { shape.last ?? 1 }
    /// Number of rows when the tensor is seen as [rows, columns].
    public var rows: Int { columns == 0 ? 0 : count / columns }

    public func reshaped(_ newShape: [Int]) -> Tensor {
        precondition(newShape.reduce(1, *) == count, "reshape \(shape) -> \(newShape) changes the element count")
        return Tensor(shape: newShape, storage: storage)
    }

    public func toArray() -> [Float] { Array(UnsafeBufferPointer(start: data, count: count)) }

    /// A copy with its own storage.
    public func copy() -> Tensor {
        let out = Tensor(zeros: shape)
        out.data.update(from: data, count: count)
        return out
    }

    /// Elements `range`, as a 1-D tensor sharing this one's memory (no copy): a slice of a bias.
    public func elements(_ range: Range<Int>) -> Tensor {
        precondition(range.lowerBound >= 0 && range.upperBound <= count, "elements \(range) of a tensor of \(count)")
        return Tensor(shape: [range.count], storage: TensorStorage(borrowing: data + range.lowerBound, count: range.count, owner: storage))
    }

    /// Rows `range` of the tensor seen as a matrix, copied.
    public func rows(_ range: Range<Int>) -> Tensor {
        var newShape = [range.count, columns]
        if rank > 2 { newShape = [range.count] + shape.dropFirst() }
        let out = Tensor(zeros: newShape)
        out.data.update(from: data + range.lowerBound * (count / shape[0]), count: out.count)
        return out
    }

    public var description: String { "Tensor\(shape)" }
}

/// Largest absolute element-wise difference; used by parity checks.
public func maxAbsDifference(_ a: Tensor, _ b: Tensor) -> Float {
    precondition(a.count == b.count, "maxAbsDifference: \(a.shape) vs \(b.shape)")
    var worst: Float = 0
    for i in 0..<a.count { worst = max(worst, abs(a.data[i] - b.data[i])) }
    return worst
}
