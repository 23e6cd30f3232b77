import ChimeraTensor
import Foundation

#if canImport(Glibc)
import Glibc
#endif

public enum WeightError: LocalizedError, Equatable {
    case unreadable(file: String, reason: String)
    case badHeader(file: String, reason: String)
    case badTensorEntry(file: String, tensor: String, reason: String)
    case missingTensor(tensor: String, searched: String)
    case wrongShape(file: String, tensor: String, expected: [Int], found: [Int])
    case unsupportedDType(file: String, tensor: String, dtype: String)
    case badIndex(file: String, reason: String)
    case tooLarge(tensor: String, shape: [Int], reason: String)

    public var errorDescription: String? {
        switch self {
        case let .unreadable(file, reason): return "\(file): cannot read weights: \(reason)"
        case let .badHeader(file, reason): return "\(file): corrupt safetensors header: \(reason)"
        case let .badTensorEntry(file, tensor, reason): return "\(file): tensor '\(tensor)': \(reason)"
        case let .missingTensor(tensor, searched): return "missing tensor '\(tensor)' (searched \(searched))"
        case let .wrongShape(file, tensor, expected, found):
            return "\(file): tensor '\(tensor)' has shape \(found), expected \(expected)"
        case let .unsupportedDType(file, tensor, dtype):
            return "\(file): tensor '\(tensor)' has dtype \(dtype); supported: F32, F16, BF16 (and I8/U8 quantized blocks)"
        case let .badIndex(file, reason): return "\(file): bad safetensors index: \(reason)"
        case let .tooLarge(tensor, shape, reason): return "tensor '\(tensor)' of shape \(shape) is too large: \(reason)"
        }
    }
}

/// Why `path` is no file to read (opening a FIFO would wait for a writer forever; a folder or a
/// device fails later, less clearly), or nil: a regular file, or nothing there (opening says so).
public func notARegularFile(_ path: String) -> String? {
    var info = stat()
    guard stat(path, &info) == 0 else { return nil }
    switch info.st_mode & S_IFMT {
    case S_IFREG: return nil
    case S_IFDIR: return "it is a folder, not a file"
    default: return "it is not a regular file (a FIFO, socket or device)"
    }
}

/// A read-only memory mapping of a whole file, unmapped when the last user goes away.
final class MappedFile: @unchecked Sendable {
    let base: UnsafeMutableRawPointer
    let size: Int

    init(path: String) throws {
        if let reason = notARegularFile(path) { throw WeightError.unreadable(file: path, reason: reason) }
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw WeightError.unreadable(file: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw WeightError.unreadable(file: path, reason: String(cString: strerror(errno))) }
        size = Int(info.st_size)
        guard size > 0 else { throw WeightError.badHeader(file: path, reason: "file is empty") }
        // MAP_PRIVATE + PROT_WRITE gives copy-on-write pages: kernels may take mutable pointers
        // into the weights, and nothing ever reaches the file.
        guard let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw WeightError.unreadable(file: path, reason: "mmap failed: \(String(cString: strerror(errno)))")
        }
        base = p
    }

    deinit { munmap(base, size) }

    /// Copies `bytes` (inside the mapping) to `destination` a few MiB at a time, releasing the
    /// mapping's pages behind the copy (MADV_DONTNEED: they are read again from the file if used
    /// again), so that a copied model is not resident twice.
    func move(_ bytes: UnsafeRawBufferPointer, to destination: UnsafeMutableRawPointer) {
        guard let source = bytes.baseAddress else { return }
        let count = bytes.count, page = Int(sysconf(Int32(_SC_PAGESIZE))), chunk = 4 << 20
        let start = Int(bitPattern: source)
        var released = (start + page - 1) / page * page  // pages shared with the neighbours stay
        var copied = 0
        while copied < count {
            let n = min(chunk, count - copied)
            memcpy(destination + copied, source + copied, n)
            copied += n
            let end = (start + copied) / page * page
            if end > released {
                _ = madvise(UnsafeMutableRawPointer(bitPattern: released), end - released, MADV_DONTNEED)
                released = end
            }
        }
    }
}

public enum WeightDType: String, Sendable {
    case f32 = "F32", f16 = "F16", bf16 = "BF16"
    /// Quantized blocks (q8_0 values, q4_0 packed nibbles) written by `chimera quantize`.
    case i8 = "I8", u8 = "U8"
    var byteSize: Int {
        switch self {
        case .f32: return 4
        case .f16, .bf16: return 2
        case .i8, .u8: return 1
        }
    }
}

public struct TensorInfo: Sendable {
    public let name: String
    public let dtype: WeightDType
    public let shape: [Int]
    let byteOffset: Int  // from the start of the file
    public let byteCount: Int
}

/// One memory-mapped .safetensors file. F32 tensors are used in place (no copy) when aligned;
/// F16 and BF16 are widened to float32 when asked for as tensors, and used in place when asked
/// for as weight matrices (`matrix(_:)`), as are quantized blocks.
public final class SafeTensorsFile: @unchecked Sendable {
    public let path: String
    public let tensors: [String: TensorInfo]
    public let metadata: [String: String]
    private let mapping: MappedFile

    public init(path: String) throws {
        self.path = path
        mapping = try MappedFile(path: path)
        guard mapping.size >= 8 else {
            throw WeightError.badHeader(file: path, reason: "file is \(mapping.size) bytes, shorter than the 8-byte header length")
        }
        // Compared as read (a garbage length need not fit in an Int).
        let storedLength = UInt64(littleEndian: mapping.base.loadUnaligned(as: UInt64.self))
        guard storedLength > 0, storedLength <= UInt64(mapping.size - 8) else {
            throw WeightError.badHeader(file: path, reason: "header length \(storedLength) exceeds the file size \(mapping.size)")
        }
        let headerLength = Int(storedLength)
        let headerData = Data(bytes: mapping.base + 8, count: headerLength)
        guard let json = try? JSONSerialization.jsonObject(with: headerData), let header = json as? [String: Any] else {
            throw WeightError.badHeader(file: path, reason: "the \(headerLength)-byte header is not a JSON object")
        }
        let dataStart = 8 + headerLength
        let dataSize = mapping.size - dataStart
        var tensors: [String: TensorInfo] = [:]
        var metadata: [String: String] = [:]
        var ranges: [(begin: Int, end: Int, name: String)] = []
        for (name, value) in header {
            if name == "__metadata__" {
                for (k, v) in value as? [String: Any] ?? [:] { metadata[k] = "\(v)" }
                continue
            }
            guard let entry = value as? [String: Any] else {
                throw WeightError.badTensorEntry(file: path, tensor: name, reason: "entry is not an object")
            }
            guard let dtypeName = entry["dtype"] as? String else {
                throw WeightError.badTensorEntry(file: path, tensor: name, reason: entry["dtype"] == nil ? "missing 'dtype'" : "'dtype' is not a string")
            }
            guard let shape = (entry["shape"] as? [Any])?.compactMap(Self.integer),
                  shape.count == (entry["shape"] as? [Any])?.count, shape.allSatisfy({ $0 >= 0 }) else {
                throw WeightError.badTensorEntry(file: path, tensor: name, reason: "'shape' is not a list of non-negative integers")
            }
            guard let offsets = (entry["data_offsets"] as? [Any])?.compactMap(Self.integer), offsets.count == 2 else {
                throw WeightError.badTensorEntry(file: path, tensor: name, reason: "'data_offsets' is not a pair of integers")
            }
            let (begin, end) = (offsets[0], offsets[1])
            guard begin >= 0, end >= begin, end <= dataSize else {
                throw WeightError.badTensorEntry(
                    file: path, tensor: name,
                    reason: "data offsets [\(begin), \(end)] fall outside the \(dataSize)-byte data section (truncated file?)")
            }
            if end > begin { ranges.append((begin, end, name)) }
            guard let dtype = WeightDType(rawValue: dtypeName) else {
                // Recorded, and refused only if a component asks for this tensor.
                tensors[name] = TensorInfo(name: name, dtype: .f32, shape: shape, byteOffset: -1, byteCount: 0)
                unsupported[name] = dtypeName
                continue
            }
            // Checked: a garbage shape must not overflow (and no data section holds more than Int.max bytes).
            let expectedBytes = shape.reduce(dtype.byteSize as Int?) { bytes, d in
                bytes.flatMap { b in let (p, overflow) = b.multipliedReportingOverflow(by: d); return overflow ? nil : p }
            }
            guard let expectedBytes, end - begin == expectedBytes else {
                throw WeightError.badTensorEntry(
                    file: path, tensor: name,
                    reason: "\(end - begin) bytes of data for shape \(shape) in \(dtypeName), expected \(expectedBytes.map(String.init) ?? "more than any file holds")")
            }
            tensors[name] = TensorInfo(name: name, dtype: dtype, shape: shape, byteOffset: dataStart + begin, byteCount: expectedBytes)
        }
        // Two tensors sharing bytes would each read the other's values (the safetensors library
        // refuses such a file too).
        ranges.sort { ($0.begin, $0.name) < ($1.begin, $1.name) }
        for (previous, next) in zip(ranges, ranges.dropFirst()) where next.begin < previous.end {
            throw WeightError.badTensorEntry(file: path, tensor: next.name,
                                             reason: "its data [\(next.begin), \(next.end)) overlaps tensor '\(previous.name)''s [\(previous.begin), \(previous.end))")
        }
        self.tensors = tensors
        self.metadata = metadata
    }

    private var unsupported: [String: String] = [:]

    /// A header integer: nil for fractions and for numbers outside Int's range, which
    /// NSNumber.intValue would truncate or clamp (1.5 read as 1, 1e30 as Int.min).
    private static func integer(_ value: Any) -> Int? {
        guard let number = value as? NSNumber else { return nil }
        if let exact = Int(exactly: number.int64Value), Double(exact) == number.doubleValue { return exact }
        return Int(exactly: number.doubleValue)
    }

    /// A tensor's bytes as stored (the header's offsets were checked against the file at open).
    func storedBytes(_ info: TensorInfo) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: mapping.base + info.byteOffset, count: info.byteCount)
    }

    /// Loads a tensor as float32.
    public func tensor(_ name: String) throws -> Tensor {
        guard let info = tensors[name] else { throw WeightError.missingTensor(tensor: name, searched: path) }
        if let dtype = unsupported[name] { throw WeightError.unsupportedDType(file: path, tensor: name, dtype: dtype) }
        let count = info.shape.reduce(1, *)
        let source = mapping.base + info.byteOffset
        switch info.dtype {
        case .f32:
            if Int(bitPattern: source) % MemoryLayout<Float>.alignment == 0 {
                let storage = TensorStorage(borrowing: source.assumingMemoryBound(to: Float.self), count: count, owner: mapping)
                return Tensor(shape: info.shape, storage: storage)
            }
            let out = Tensor(zeros: info.shape)
            memcpy(out.data, source, count * 4)
            return out
        case .f16:
            let out = Tensor(zeros: info.shape)
            for i in 0..<count {
                out.data[i] = Float(Float16(bitPattern: source.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self)))
            }
            return out
        case .bf16:
            let out = Tensor(zeros: info.shape)
            for i in 0..<count {
                let bits = UInt32(source.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self)) << 16
                out.data[i] = Float(bitPattern: bits)
            }
            return out
        case .i8, .u8:
            throw WeightError.badTensorEntry(file: path, tensor: name, reason: "holds quantized \(info.dtype.rawValue) blocks; it can only be a weight matrix")
        }
    }

    /// `m` (a matrix this file handed out) copied, unconverted, out of the mapping into weight
    /// memory (huge pages, see WeightMemory) for decode to stream; `m` itself when it is not in
    /// the mapping.
    public func resident(_ m: WeightMatrix) -> WeightMatrix {
        let mapped = UnsafeRawPointer(mapping.base)..<UnsafeRawPointer(mapping.base + mapping.size)
        guard mapped.contains(m.data) else { return m }
        if m.format == .f32 {
            let t = WeightMemory.tensor(rows: m.rows, columns: m.columns)
            mapping.move(m.valueBytes, to: UnsafeMutableRawPointer(t.data))
            return WeightMatrix(t)
        }
        let values = m.valueBytes, scales = m.scaleBytes
        let (pointer, owner) = WeightMemory.allocate(values.count + (scales?.count ?? 0))
        mapping.move(values, to: pointer)
        if let scales { mapping.move(scales, to: pointer + values.count) }
        return WeightMatrix(format: m.format, rows: m.rows, columns: m.columns, data: pointer,
                            scales: scales == nil ? nil : UnsafePointer((pointer + values.count).assumingMemoryBound(to: UInt16.self)),
                            owner: owner)
    }

    /// Suffix of the float16 block scales stored next to a quantized matrix.
    public static let scalesSuffix = ".scales"

    /// A 2-D weight matrix in its stored format, used in place: F32/F16/BF16 as stored, I8 with
    /// "<name>.scales" as q8_0, U8 with "<name>.scales" as q4_0 or q6_0 (told apart by their width:
    /// columns/2 or columns·3/4 bytes a row; layouts in chimera_kernels.h).
    /// `shape` is the logical [rows, columns].
    public func matrix(_ name: String, shape: [Int]) throws -> WeightMatrix {
        guard let info = tensors[name] else { throw WeightError.missingTensor(tensor: name, searched: path) }
        if let dtype = unsupported[name] { throw WeightError.unsupportedDType(file: path, tensor: name, dtype: dtype) }
        guard shape.count == 2 else { return WeightMatrix(try tensor(name)) }
        let rows = shape[0], columns = shape[1]
        let source = UnsafeRawPointer(mapping.base + info.byteOffset)
        switch info.dtype {
        case .f32:
            guard info.shape == shape else { throw WeightError.wrongShape(file: path, tensor: name, expected: shape, found: info.shape) }
            return WeightMatrix(try tensor(name))
        case .f16, .bf16:
            guard info.shape == shape else { throw WeightError.wrongShape(file: path, tensor: name, expected: shape, found: info.shape) }
            // The kernels load 16-bit values; safetensors offsets are byte offsets, so check.
            guard Int(bitPattern: source) % 2 == 0 else { return WeightMatrix(try tensor(name)) }
            return WeightMatrix(format: info.dtype == .f16 ? .f16 : .bf16, rows: rows, columns: columns,
                                data: source, scales: nil, owner: mapping)
        case .i8, .u8:
            let format: WeightFormat = info.dtype == .i8 ? .q8_0 : info.shape.last == columns / 4 * 3 ? .q6_0 : .q4_0
            let stored = [rows, WeightMatrix.valueBytes(format, rows: 1, columns: columns)]
            guard columns % 32 == 0, info.shape == stored else {
                throw WeightError.badTensorEntry(file: path, tensor: name, reason:
                    "\(format.rawValue) blocks of shape \(info.shape) do not hold a [\(rows), \(columns)] matrix (expected \(stored))")
            }
            let scalesName = name + Self.scalesSuffix
            guard let scales = tensors[scalesName] else {
                throw WeightError.badTensorEntry(file: path, tensor: name, reason: "quantized \(info.dtype.rawValue) matrix without its '\(scalesName)' tensor")
            }
            guard scales.dtype == .f16, scales.shape == [rows, columns / 32] else {
                throw WeightError.badTensorEntry(file: path, tensor: scalesName, reason:
                    "expected F16 [\(rows), \(columns / 32)] block scales, found \(scales.dtype.rawValue) \(scales.shape)")
            }
            let scalesPointer = UnsafeRawPointer(mapping.base + scales.byteOffset)
            guard Int(bitPattern: scalesPointer) % 2 == 0 else {
                throw WeightError.badTensorEntry(file: path, tensor: scalesName, reason: "scales are not 2-byte aligned in the file")
            }
            return WeightMatrix(format: format, rows: rows, columns: columns, data: source,
                                scales: scalesPointer.assumingMemoryBound(to: UInt16.self), owner: mapping)
        }
    }
}

/// All weights of a checkpoint: one or several .safetensors files (sharded checkpoints list
/// theirs in model.safetensors.index.json). Tensors are looked up by their full name.
public final class WeightStore: @unchecked Sendable {
    public let files: [SafeTensorsFile]
    private let owner: [String: SafeTensorsFile]

    public init(files paths: [String]) throws {
        var files: [SafeTensorsFile] = []
        for path in paths {
            if path.hasSuffix(".index.json") {
                files += try WeightStore.openIndex(path)
            } else {
                files.append(try SafeTensorsFile(path: path))
            }
        }
        var owner: [String: SafeTensorsFile] = [:]
        for file in files { for name in file.tensors.keys { owner[name] = file } }
        self.files = files
        self.owner = owner
        byteCount = files.reduce(0) { $0 + $1.tensors.values.reduce(0) { $0 + $1.byteCount } }
    }

    private static func openIndex(_ path: String) throws -> [SafeTensorsFile] {
        if let reason = notARegularFile(path) { throw WeightError.unreadable(file: path, reason: reason) }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw WeightError.unreadable(file: path, reason: "no such file")
        }
        guard let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let map = json["weight_map"] as? [String: String] else {
            throw WeightError.badIndex(file: path, reason: "expected an object with a 'weight_map' of tensor name → file")
        }
        guard !map.isEmpty else { throw WeightError.badIndex(file: path, reason: "its 'weight_map' lists no tensors (and so no files)") }
        let directory = (path as NSString).deletingLastPathComponent
        return try Set(map.values).sorted().map { try SafeTensorsFile(path: (directory as NSString).appendingPathComponent($0)) }
    }

    public var tensorNames: [String] { owner.keys.sorted() }
    /// Bytes of every tensor the files hold (what loading all of them reads).
    public let byteCount: Int
    public func contains(_ name: String) -> Bool { owner[name] != nil }
    public func info(_ name: String) -> TensorInfo? { owner[name]?.tensors[name] }

    /// The file that holds `name`.
    private func file(holding name: String) throws -> SafeTensorsFile {
        guard let file = owner[name] else {
            throw WeightError.missingTensor(tensor: name, searched: files.map(\.path).joined(separator: ", "))
        }
        return file
    }

    public func tensor(_ name: String) throws -> Tensor { try file(holding: name).tensor(name) }

    /// Whether two tensors are stored alike: dtype, shape and bytes (a checkpoint that keeps a copy
    /// of its embeddings as its output head).
    public func storeSameValues(_ a: String, _ b: String) -> Bool {
        guard let fileA = owner[a], let fileB = owner[b], let infoA = fileA.tensors[a], let infoB = fileB.tensors[b],
              infoA.dtype == infoB.dtype, infoA.shape == infoB.shape else { return false }
        return memcmp(fileA.storedBytes(infoA).baseAddress!, fileB.storedBytes(infoB).baseAddress!, infoA.byteCount) == 0
    }

    /// A weight matrix in its stored format (see SafeTensorsFile.matrix).
    public func matrix(_ name: String, shape: [Int]) throws -> WeightMatrix { try file(holding: name).matrix(name, shape: shape) }

    /// The stored matrix `name` (as `matrix` read it) copied into weight memory (see
    /// SafeTensorsFile.resident).
    public func resident(_ m: WeightMatrix, named name: String) throws -> WeightMatrix { try file(holding: name).resident(m) }

    /// Loads a tensor and checks its shape.
    public func tensor(_ name: String, shape: [Int]) throws -> Tensor {
        let file = try file(holding: name), info = file.tensors[name]!  // the owner map lists a file's own tensors
        guard info.shape == shape else {
            throw WeightError.wrongShape(file: file.path, tensor: name, expected: shape, found: info.shape)
        }
        return try file.tensor(name)
    }
}

/// Writes a .safetensors file. Entries are laid out widest dtype first (F32, then 16-bit, then
/// 8-bit) after a header padded to 8 bytes, so every tensor is aligned for in-place use.
public enum SafeTensorsWriter {
    public struct Entry {
        public var name: String
        public var dtype: WeightDType
        public var shape: [Int]
        public var bytes: UnsafeRawBufferPointer
        public init(name: String, dtype: WeightDType, shape: [Int], bytes: UnsafeRawBufferPointer) {
            self.name = name; self.dtype = dtype; self.shape = shape; self.bytes = bytes
        }
    }

    public static func write(_ entries: [Entry], metadata: [String: String] = [:], to url: URL) throws {
        let ordered = entries.sorted { ($0.dtype.byteSize, $1.name) > ($1.dtype.byteSize, $0.name) }
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        for entry in ordered {
            precondition(entry.bytes.count == entry.shape.reduce(1, *) * entry.dtype.byteSize,
                         "safetensors writer: '\(entry.name)' has \(entry.bytes.count) bytes for \(entry.shape) \(entry.dtype.rawValue)")
            header[entry.name] = ["dtype": entry.dtype.rawValue, "shape": entry.shape, "data_offsets": [offset, offset + entry.bytes.count]]
            offset += entry.bytes.count
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while (8 + json.count) % 8 != 0 { json.append(0x20) }
        try writeOutputFile(Data(), to: url)
        guard let handle = FileHandle(forWritingAtPath: url.path) else { throw OutputError(path: url.path, reason: "cannot open the file for writing") }
        defer { try? handle.close() }
        var length = UInt64(json.count).littleEndian
        try handle.write(contentsOf: Data(bytes: &length, count: 8))
        try handle.write(contentsOf: json)
        for entry in ordered where entry.bytes.count > 0 {
            try handle.write(contentsOf: Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: entry.bytes.baseAddress!),
                                              count: entry.bytes.count, deallocator: .none))
        }
    }
}
