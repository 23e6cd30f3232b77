import ChimeraTensor
import Foundation
import Testing
@testable import ChimeraIO

/// Writes a safetensors file from (name, dtype, shape, raw bytes) entries, optionally damaged.
func writeSafeTensors(_ entries: [(String, String, [Int], [UInt8])], headerOverride: String? = nil, to url: URL) throws {
    var offset = 0
    var header: [String] = []
    var body: [UInt8] = []
    for (name, dtype, shape, bytes) in entries {
        header.append("\"\(name)\":{\"dtype\":\"\(dtype)\",\"shape\":\(shape),\"data_offsets\":[\(offset),\(offset + bytes.count)]}")
        offset += bytes.count
        body += bytes
    }
    let json = Array((headerOverride ?? "{\(header.joined(separator: ","))}").utf8)
    var data = Data()
    withUnsafeBytes(of: UInt64(json.count).littleEndian) { data.append(contentsOf: $0) }
    data.append(contentsOf: json)
    data.append(contentsOf: body)
    try data.write(to: url)
}

func floatBytes(_ values: [Float]) -> [UInt8] { values.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) } }
func halfBytes(_ values: [Float]) -> [UInt8] { values.flatMap { withUnsafeBytes(of: Float16($0).bitPattern.littleEndian, Array.init) } }
func bfloatBytes(_ values: [Float]) -> [UInt8] { values.flatMap { withUnsafeBytes(of: UInt16($0.bitPattern >> 16).littleEndian, Array.init) } }

func scratchFile(_ name: String) -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("chimera-st-\(UUID().uuidString)")
    try! FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir.appendingPathComponent(name)
}

func errorText(_ body: () throws -> Void) -> String {
    do { try body(); return "(no error)" } catch { return (error as? LocalizedError)?.errorDescription ?? "\(error)" }
}

@Suite struct SafeTensorsTests {
    @Test func readsF32F16AndBF16() throws {
        let url = scratchFile("model.safetensors")
        let values: [Float] = [1, -2, 0.5, 3.25, 0, 100]
        try writeSafeTensors([("a", "F32", [2, 3], floatBytes(values)), ("b", "F16", [6], halfBytes(values)),
                              ("c", "BF16", [3, 2], bfloatBytes(values))], to: url)
        let store = try WeightStore(files: [url.path])
        #expect(try store.tensor("a", shape: [2, 3]).toArray() == values)
        #expect(try store.tensor("b").toArray() == values)
        #expect(try store.tensor("c").shape == [3, 2])
        #expect(try store.tensor("c").toArray() == values)
    }

    /// Two tensors are stored alike when dtype, shape and bytes agree, across shards too (what
    /// import asks of an lm_head beside the embeddings).
    @Test func storedValuesCompareByDTypeShapeAndBytes() throws {
        let dir = scratchFile("same-values")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let first = dir.appendingPathComponent("a.safetensors"), second = dir.appendingPathComponent("b.safetensors")
        try writeSafeTensors([("embed", "BF16", [2, 2], bfloatBytes([1, 2, 3, 4])), ("same", "BF16", [2, 2], bfloatBytes([1, 2, 3, 4])),
                              ("other", "BF16", [2, 2], bfloatBytes([1, 2, 3, 5])), ("flat", "BF16", [4], bfloatBytes([1, 2, 3, 4]))], to: first)
        try writeSafeTensors([("wide", "F32", [2, 2], floatBytes([1, 2, 3, 4])), ("shard", "BF16", [2, 2], bfloatBytes([1, 2, 3, 4]))], to: second)
        let store = try WeightStore(files: [first.path, second.path])
        #expect(store.storeSameValues("embed", "same") && store.storeSameValues("embed", "shard"))
        #expect(!store.storeSameValues("embed", "other") && !store.storeSameValues("embed", "flat"))
        #expect(!store.storeSameValues("embed", "wide") && !store.storeSameValues("embed", "absent"))
    }

    @Test func shardedCheckpointsFollowTheIndex() throws {
        let first = scratchFile("model-00001-of-00002.safetensors")
        let dir = first.deletingLastPathComponent()
        try writeSafeTensors([("x", "F32", [2], floatBytes([1, 2]))], to: first)
        try writeSafeTensors([("y", "F32", [1], floatBytes([3]))], to: dir.appendingPathComponent("model-00002-of-00002.safetensors"))
        let index = dir.appendingPathComponent("model.safetensors.index.json")
        try Data(#"{"metadata":{},"weight_map":{"x":"model-00001-of-00002.safetensors","y":"model-00002-of-00002.safetensors"}}"#.utf8).write(to: index)
        let store = try WeightStore(files: [index.path])
        #expect(try store.tensor("x").toArray() == [1, 2])
        #expect(try store.tensor("y").toArray() == [3])
        try Data("{\"weights\": 1}".utf8).write(to: index)
        #expect(errorText { _ = try WeightStore(files: [index.path]) }.contains("weight_map"))
    }

    @Test func corruptFilesGiveErrorsNamingFileAndTensor() throws {
        let url = scratchFile("bad.safetensors")
        // header length larger than the file
        var data = Data()
        withUnsafeBytes(of: UInt64(1 << 40).littleEndian) { data.append(contentsOf: $0) }
        try data.write(to: url)
        var message = errorText { _ = try SafeTensorsFile(path: url.path) }
        #expect(message.contains("bad.safetensors") && message.contains("header length"))
        // header that is not JSON
        try writeSafeTensors([], headerOverride: "{not json", to: url)
        #expect(errorText { _ = try SafeTensorsFile(path: url.path) }.contains("not a JSON object"))
        // offsets beyond the data (a truncated file)
        try writeSafeTensors([("w", "F32", [4], floatBytes([1, 2, 3, 4]))], to: url)
        let full = try Data(contentsOf: url)
        try full.prefix(full.count - 4).write(to: url)
        message = errorText { _ = try SafeTensorsFile(path: url.path) }
        #expect(message.contains("'w'") && message.contains("outside") && message.contains("truncated"))
        // byte count that disagrees with shape and dtype
        try writeSafeTensors([("w", "F32", [5], floatBytes([1, 2, 3, 4]))], to: url)
        #expect(errorText { _ = try SafeTensorsFile(path: url.path) }.contains("expected 20"))
        // empty and missing files
        try Data().write(to: url)
        #expect(errorText { _ = try SafeTensorsFile(path: url.path) }.contains("empty"))
        #expect(errorText { _ = try SafeTensorsFile(path: url.path + ".missing") }.contains("No such file"))
    }

    @Test func wrongShapeDTypeAndMissingTensorsAreRefusedOnLoad() throws {
        let url = scratchFile("w.safetensors")
        try writeSafeTensors([("w", "F32", [2, 2], floatBytes([1, 2, 3, 4])), ("ids", "I64", [1], [UInt8](repeating: 0, count: 8))], to: url)
        let store = try WeightStore(files: [url.path])
        var message = errorText { _ = try store.tensor("w", shape: [4, 2]) }
        #expect(message.contains("w.safetensors") && message.contains("'w'") && message.contains("[2, 2]") && message.contains("[4, 2]"))
        message = errorText { _ = try store.tensor("ids") }
        #expect(message.contains("'ids'") && message.contains("I64"))
        message = errorText { _ = try store.tensor("missing.weight") }
        #expect(message.contains("missing.weight") && message.contains("w.safetensors"))
    }

    @Test func alignedF32IsNotCopied() throws {
        let url = scratchFile("m.safetensors")
        // An 8-byte-padded header keeps the data 4-byte aligned: the tensor borrows the mapping.
        let header = #"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#
        let padded = header + String(repeating: " ", count: (8 - header.utf8.count % 8) % 8)
        try writeSafeTensors([("w", "F32", [2], floatBytes([7, 8]))], headerOverride: padded, to: url)
        let a = try WeightStore(files: [url.path]).tensor("w")
        let file = try SafeTensorsFile(path: url.path)
        let b = try file.tensor("w"), c = try file.tensor("w")
        #expect(a.toArray() == [7, 8])
        #expect(b.data == c.data)  // same mapped memory, no copies
    }
}
