@_exported import CChimeraPlugin
@_exported import Chimera
@_exported import ChimeraTensor
import Foundation
#if canImport(Glibc)
import Glibc
#endif

// Writing a plugin in Swift: describe each family as a ComponentFamily (the same type the
// built-ins use, so a family moves between core and plugin unchanged) whose components conform
// to ModalityEncoder or Connector, then export the C table of chimera_plugin.h with one line:
//
//     @_cdecl("chimera_plugin_entry")
//     public func chimeraPluginEntry() -> UnsafeRawPointer { PluginExport.table(MyPlugin.self) }
//
// The kit turns the C calls back into Swift calls and every thrown error into an error string.

/// What a Swift plugin declares.
public protocol ChimeraPlugin {
    static var name: String { get }
    static var version: String { get }
    /// Encoder families also name their modality (ComponentFamily has none).
    static var families: [(family: ComponentFamily, modality: String?)] { get }
}

public enum PluginExport {
    /// The C table for `plugin`, built once and kept for the life of the library.
    public static func table<P: ChimeraPlugin>(_ plugin: P.Type) -> UnsafeRawPointer {
        lock.lock(); defer { lock.unlock() }
        if let built = exported { return UnsafeRawPointer(built) }
        let registry = FamilyRegistry()
        let entries = P.families
        let families = UnsafeMutablePointer<chimera_family>.allocate(capacity: max(entries.count, 1))
        for (i, entry) in entries.enumerated() {
            try? registry.register(entry.family)
            families[i] = chimera_family(
                name: strdup(entry.family.name),
                kind: entry.family.kind == .encoder ? CHIMERA_KIND_ENCODER : CHIMERA_KIND_CONNECTOR,
                modality: entry.modality.map { UnsafePointer(strdup($0)) } ?? nil,
                summary: strdup(entry.family.summary),
                validate: validateThunk, output_tokens: outputTokensThunk, create: createThunk, describe: describeThunk,
                prepare: entry.family.kind == .encoder ? prepareThunk : nil, forward: forwardThunk,
                parameter: parameterThunk, destroy: destroyThunk)
        }
        state = registry
        let table = UnsafeMutablePointer<chimera_plugin>.allocate(capacity: 1)
        table.initialize(to: chimera_plugin(abi_version: CHIMERA_PLUGIN_ABI_VERSION, name: strdup(P.name), version: strdup(P.version),
                                            family_count: Int32(entries.count), families: families, free: { Glibc.free($0) }))
        exported = table
        return UnsafeRawPointer(table)
    }

    nonisolated(unsafe) static var exported: UnsafeMutablePointer<chimera_plugin>?
    nonisolated(unsafe) static var state = FamilyRegistry()
    static let lock = NSLock()

    /// A created component and the contract the host reads once.
    final class Instance {
        let component: any Component
        let parameters: [(name: UnsafeMutablePointer<CChar>, tensor: Tensor)]
        init(_ component: any Component) {
            self.component = component
            parameters = component.parameters.map { (strdup($0.name)!, $0.tensor) }
        }
        deinit { parameters.forEach { Glibc.free($0.name) } }
    }

    static func manifest(_ json: UnsafePointer<CChar>?, directory: String?) throws -> ComponentManifest {
        guard let json else { throw PluginKitError("no manifest JSON") }
        let dir = URL(fileURLWithPath: directory ?? FileManager.default.currentDirectoryPath)
        let data = Data(String(cString: json).utf8)
        guard case var .component(m) = try AnyManifest.parse(data, file: "(manifest given by the host)", directory: dir) else {
            throw PluginKitError("the manifest is an assembly, not a component")
        }
        m.directory = dir
        return m
    }

    static func report(_ error: Error, _ out: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
        out?.pointee = strdup((error as? LocalizedError)?.errorDescription ?? "\(error)")
        return 1
    }

    /// A tensor copied into malloc'd memory the host releases with the table's free.
    static func send(_ tensor: Tensor, _ out: UnsafeMutablePointer<chimera_tensor>?) throws {
        guard let out else { throw PluginKitError("no output tensor") }
        guard tensor.rank <= Int(CHIMERA_TENSOR_MAX_RANK) else { throw PluginKitError("rank \(tensor.rank) is over \(CHIMERA_TENSOR_MAX_RANK)") }
        let data = malloc(max(tensor.count, 1) * 4)!.assumingMemoryBound(to: Float.self)
        data.update(from: tensor.data, count: tensor.count)
        out.pointee = view(tensor, data: data)
    }

    static func view(_ tensor: Tensor, data: UnsafeMutablePointer<Float>) -> chimera_tensor {
        var t = chimera_tensor()
        t.data = data
        t.rank = Int32(tensor.rank)
        withUnsafeMutableBytes(of: &t.shape) { raw in
            let dims = raw.bindMemory(to: Int64.self)
            for (i, d) in tensor.shape.enumerated() { dims[i] = Int64(d) }
        }
        return t
    }

    static func tensor(_ t: chimera_tensor) throws -> Tensor {
        guard let data = t.data, t.rank >= 1, t.rank <= CHIMERA_TENSOR_MAX_RANK else { throw PluginKitError("input tensor has no data or rank \(t.rank)") }
        let shape = withUnsafeBytes(of: t.shape) { raw in
            let dims = raw.bindMemory(to: Int64.self)
            return (0..<Int(t.rank)).map { Int(dims[$0]) }
        }
        return Tensor(shape: shape, values: Array(UnsafeBufferPointer(start: data, count: shape.reduce(1, *))))
    }

    static func instance(_ handle: UnsafeMutableRawPointer?) -> Instance {
        Unmanaged<Instance>.fromOpaque(handle!).takeUnretainedValue()
    }
}

public struct PluginKitError: LocalizedError {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var errorDescription: String? { message }
}

// The C entry points. None captures context (C function pointers cannot), so each finds its
// family by the manifest's "family" field or its instance through the handle.

private let validateThunk: @convention(c) (UnsafePointer<CChar>?, UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 = { json, errorOut in
    do {
        let m = try PluginExport.manifest(json, directory: nil)
        try PluginExport.state.family(for: m).validate(m)
        return 0
    } catch let ManifestError.invalid(_, detail) {
        // The host knows the manifest's file and names it; the detail names the field.
        return PluginExport.report(PluginKitError(detail), errorOut)
    } catch { return PluginExport.report(error, errorOut) }
}

private let outputTokensThunk: @convention(c) (UnsafePointer<CChar>?, Int64) -> Int64 = { json, tokens in
    guard let m = try? PluginExport.manifest(json, directory: nil), let family = try? PluginExport.state.family(for: m) else { return -1 }
    return family.connectorTokens(m, Int(tokens)).map(Int64.init) ?? -1
}

private let createThunk: @convention(c) (UnsafePointer<CChar>?, UnsafePointer<CChar>?, UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
                                         UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 = { json, directory, handle, errorOut in
    do {
        let m = try PluginExport.manifest(json, directory: directory.map { String(cString: $0) })
        let component = try PluginExport.state.build(m, inputWidth: m.inputWidth?.value, outputWidth: m.outputWidth?.value)
        handle?.pointee = Unmanaged.passRetained(PluginExport.Instance(component)).toOpaque()
        return 0
    } catch { return PluginExport.report(error, errorOut) }
}

private let describeThunk: @convention(c) (UnsafeMutableRawPointer?) -> UnsafeMutablePointer<CChar>? = { handle in
    let instance = PluginExport.instance(handle)
    var contract: [String: JSONValue] = ["parameters": .number(Double(instance.parameters.count))]
    if let encoder = instance.component as? any ModalityEncoder {
        contract["hidden_states"] = .number(Double(encoder.hiddenStateCount))
        contract["output"] = .object(["width": .number(Double(encoder.output.width)), "tokens": .number(Double(encoder.output.tokens))])
    } else if let connector = instance.component as? any Connector {
        contract["input_width"] = .number(Double(connector.inputWidth))
        contract["output_width"] = .number(Double(connector.outputWidth))
    }
    let data = (try? JSONEncoder().encode(JSONValue.object(contract))) ?? Data("{}".utf8)
    return strdup(String(decoding: data, as: UTF8.self))
}

private let prepareThunk: @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<CChar>?, UnsafeMutablePointer<chimera_tensor>?,
                                          UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 = { handle, path, out, errorOut in
    do {
        guard let encoder = PluginExport.instance(handle).component as? any ModalityEncoder else { throw PluginKitError("not an encoder") }
        guard let path else { throw PluginKitError("no input path") }
        try PluginExport.send(try encoder.prepareInput(contentsOf: URL(fileURLWithPath: String(cString: path))), out)
        return 0
    } catch { return PluginExport.report(error, errorOut) }
}

private let forwardThunk: @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<chimera_tensor>?, Int32, Int32, UnsafeMutablePointer<chimera_tensor>?,
                                          UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 = { handle, inputs, count, layer, out, errorOut in
    do {
        guard let inputs, count == 1 else { throw PluginKitError("expected one input tensor, found \(count)") }
        let input = try PluginExport.tensor(inputs.pointee)
        switch PluginExport.instance(handle).component {
        case let encoder as any ModalityEncoder: try PluginExport.send(try encoder.hiddenState(input, layer: Int(layer)), out)
        case let connector as any Connector: try PluginExport.send(try connector.forward(input), out)
        default: throw PluginKitError("component is neither an encoder nor a connector")
        }
        return 0
    } catch { return PluginExport.report(error, errorOut) }
}

private let parameterThunk: @convention(c) (UnsafeMutableRawPointer?, Int64, UnsafeMutablePointer<UnsafePointer<CChar>?>?,
                                            UnsafeMutablePointer<chimera_tensor>?) -> Int32 = { handle, index, name, view in
    let instance = PluginExport.instance(handle)
    guard index >= 0, Int(index) < instance.parameters.count, let name, let view else { return 1 }
    let p = instance.parameters[Int(index)]
    name.pointee = UnsafePointer(p.name)
    view.pointee = PluginExport.view(p.tensor, data: p.tensor.data)
    return 0
}

private let destroyThunk: @convention(c) (UnsafeMutableRawPointer?) -> Void = { handle in
    if let handle { Unmanaged<PluginExport.Instance>.fromOpaque(handle).release() }
}
