import CChimeraPlugin
import CPluginHost
import ChimeraIO
import ChimeraTensor
import Foundation
#if canImport(Glibc)
import Glibc
#endif

// Run-time plugins: shared libraries exporting the C table of chimera_plugin.h. Each plugin family
// is wrapped into a ComponentFamily whose components are ModalityEncoder / Connector objects backed
// by that table, so the registry, compat, the assembler and generate treat them like built-ins.
// Everything a plugin hands back is checked (ABI version, missing functions, shapes, finiteness)
// and refused with a message naming the plugin. Every call into a plugin runs through
// chimera_run_guarded (chimera_plugin_host.h), which catches the plugin's crash; a plugin that
// crashed is not called again.

public enum PluginError: LocalizedError {
    case cannotOpen(library: String, reason: String)
    case missingEntry(library: String, reason: String)
    case wrongABI(library: String, plugin: String, expected: Int32, found: Int32)
    case malformed(library: String, detail: String)
    case failed(plugin: String, family: String, call: String, message: String)
    case badOutput(plugin: String, family: String, call: String, detail: String)
    case duplicateFamily(name: String, first: String, second: String)
    case notInstalled(name: String, directory: String, installed: [String])
    case crashed(plugin: String, call: String, signal: String)

    public var errorDescription: String? {
        switch self {
        case let .cannotOpen(library, reason): return "plugin \(library): cannot load library: \(reason)"
        case let .missingEntry(library, reason):
            return "plugin \(library): no entry point \(CHIMERA_PLUGIN_ENTRY_SYMBOL) (\(reason)); is it a Chimera plugin?"
        case let .wrongABI(library, plugin, expected, found):
            return "plugin '\(plugin)' (\(library)): ABI version \(found), but this chimera speaks version \(expected); rebuild the plugin against this chimera"
        case let .malformed(library, detail): return "plugin \(library): \(detail)"
        case let .failed(plugin, family, call, message): return "plugin '\(plugin)', family '\(family)': \(call) failed: \(message)"
        case let .badOutput(plugin, family, call, detail): return "plugin '\(plugin)', family '\(family)': \(call) returned \(detail)"
        case let .duplicateFamily(name, first, second): return "component family '\(name)' is defined by \(first) and by \(second)"
        case let .notInstalled(name, directory, installed):
            return "no plugin '\(name)' is installed in \(directory) (installed: \(installed.isEmpty ? "none" : installed.joined(separator: ", ")))"
        case let .crashed(plugin, call, signal):
            return "plugin \(plugin) crashed in \(call): \(signal); it is not called again in this process (fix or remove the plugin)"
        }
    }
}

/// One loaded plugin library. Libraries are never unloaded: code they run may still be referenced
/// by Swift metadata or callbacks, and a process loads a plugin once.
public final class PluginLibrary: @unchecked Sendable {
    public let path: String
    public let name: String
    public let version: String
    /// Folder of manifests shipped with the plugin (`<plugin folder>/manifests`), when present.
    public let manifestDirectory: URL?
    let table: UnsafePointer<chimera_plugin>
    public private(set) var families: [ComponentFamily] = []

    /// Set by a program that can load a library in a child process of its own (the chimera CLI,
    /// with `childLoadProbe`): called with a library's path before it is opened here, it returns
    /// why the library is refused, or nil. A library's load-time constructors run inside dlopen,
    /// where no guard can catch them: a crash there (the loader's lock still held) would take the
    /// process down, a loop would hang it. Without a probe, libraries are opened directly.
    nonisolated(unsafe) public static var loadProbe: (@Sendable (String) -> String?)?

    /// A `loadProbe` that runs `executable arguments... <library>` (which should dlopen the library
    /// and exit 0) and refuses the library when that child is ended by a signal or does not finish
    /// within `timeLimit` seconds. When no child can be started, nothing is refused.
    public static func childLoadProbe(executable: URL, arguments: [String], timeLimit: TimeInterval = 10) -> @Sendable (String) -> String? {
        { path in
            let child = Process()
            child.executableURL = executable
            child.arguments = arguments + [path]
            child.standardOutput = FileHandle.nullDevice
            child.standardError = FileHandle.nullDevice
            do { try child.run() } catch { return nil }
            let deadline = Date().addingTimeInterval(timeLimit)
            while child.isRunning && Date() < deadline { usleep(2000) }
            if child.isRunning {
                kill(child.processIdentifier, SIGKILL)
                child.waitUntilExit()
                return "loading it did not finish within \(Int(timeLimit)) s (a load-time constructor that never returns?)"
            }
            guard child.terminationReason == .uncaughtSignal else { return nil }
            return "it crashed as it was loaded, in its load-time constructors: \(String(cString: chimera_signal_description(child.terminationStatus)))"
        }
    }

    /// What the child of `childLoadProbe` runs: loads the library with the default signal
    /// dispositions (a crash ends the child, unreported) and exits.
    public static func loadInProbeChild(_ path: String) -> Never {
        for signalNumber in [SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGABRT] { signal(signalNumber, SIG_DFL) }
        _ = dlopen(path, RTLD_NOW | RTLD_LOCAL)
        _exit(0)
    }

    /// The plugin ABI version this host speaks (chimera_plugin.h).
    public static let abiVersion = Int(CHIMERA_PLUGIN_ABI_VERSION)

    /// Opens `path`, checks the ABI version first and every function the host will call.
    public init(path: String, manifestDirectory: URL? = nil) throws {
        self.path = path
        self.manifestDirectory = manifestDirectory
        // (dlopen of a FIFO waits for a writer forever)
        if let reason = notARegularFile(path) { throw PluginError.cannotOpen(library: path, reason: reason) }
        if let probe = Self.loadProbe, let reason = probe(path) { throw PluginError.cannotOpen(library: path, reason: reason) }
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
            throw PluginError.cannotOpen(library: path, reason: dlerror().map { String(cString: $0) } ?? "unknown dlopen error")
        }
        guard let symbol = dlsym(handle, CHIMERA_PLUGIN_ENTRY_SYMBOL) else {
            throw PluginError.missingEntry(library: path, reason: dlerror().map { String(cString: $0) } ?? "symbol not found")
        }
        let entry = unsafeBitCast(symbol, to: chimera_plugin_entry_fn.self)
        var returned: UnsafePointer<chimera_plugin>?
        if let crash = Self.runGuarded(plugin: path, call: CHIMERA_PLUGIN_ENTRY_SYMBOL + "()", { returned = entry() }) { throw crash }
        guard let table = returned else {
            throw PluginError.malformed(library: path, detail: "\(CHIMERA_PLUGIN_ENTRY_SYMBOL)() returned NULL")
        }
        // Only abi_version is read before the version is known to match.
        let abi = table.pointee.abi_version
        let reportedName = abi == CHIMERA_PLUGIN_ABI_VERSION ? table.pointee.name.map { String(cString: $0) } : nil
        guard abi == CHIMERA_PLUGIN_ABI_VERSION else {
            throw PluginError.wrongABI(library: path, plugin: URL(fileURLWithPath: path).lastPathComponent,
                                       expected: CHIMERA_PLUGIN_ABI_VERSION, found: abi)
        }
        guard let name = reportedName, !name.isEmpty else { throw PluginError.malformed(library: path, detail: "the plugin table has no name") }
        // The name becomes a folder (`plugin install`): letters, digits, ".", "_", "-", not starting with ".".
        guard name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) }), !name.hasPrefix(".") else {
            throw PluginError.malformed(library: path, detail: "plugin name '\(name)' is not a folder name (letters, digits, '.', '_', '-'; no leading '.')")
        }
        self.table = table
        self.name = name
        version = table.pointee.version.map { String(cString: $0) } ?? "?"
        guard table.pointee.free != nil else { throw PluginError.malformed(library: path, detail: "plugin '\(name)' has no free function") }
        let count = Int(table.pointee.family_count)
        guard (0...4096).contains(count) else {
            throw PluginError.malformed(library: path, detail: "plugin '\(name)' declares \(count) families (expected 0...4096)")
        }
        guard count == 0 || table.pointee.families != nil else {
            throw PluginError.malformed(library: path, detail: "plugin '\(name)' declares \(count) families but no family table")
        }
        for i in 0..<count {
            families.append(try wrap(table.pointee.families[i], index: i))
        }
    }

    var origin: String { "plugin \(name) (\(path))" }

    private func wrap(_ family: chimera_family, index: Int) throws -> ComponentFamily {
        guard let cName = family.name, !String(cString: cName).isEmpty else {
            throw PluginError.malformed(library: path, detail: "plugin '\(name)': family #\(index) has no name")
        }
        let familyName = String(cString: cName)
        var missing: [String] = []
        if family.create == nil { missing.append("create") }
        if family.describe == nil { missing.append("describe") }
        if family.forward == nil { missing.append("forward") }
        if family.destroy == nil { missing.append("destroy") }
        let kind: ComponentKind
        switch family.kind {
        case CHIMERA_KIND_ENCODER:
            kind = .encoder
            if family.prepare == nil { missing.append("prepare (encoders read their input files)") }
        case CHIMERA_KIND_CONNECTOR: kind = .connector
        default:
            throw PluginError.malformed(library: path, detail: "plugin '\(name)', family '\(familyName)': unknown kind \(family.kind.rawValue)")
        }
        guard missing.isEmpty else {
            throw PluginError.malformed(library: path, detail: "plugin '\(name)', family '\(familyName)': missing \(missing.joined(separator: ", "))")
        }
        let summary = family.summary.map { String(cString: $0) } ?? "plugin family"
        let modality = kind == .encoder ? family.modality.map { String(cString: $0) } : nil
        let library = self, entry = FamilyTable(raw: family)
        return ComponentFamily(
            name: familyName, kind: kind, summary: summary, origin: origin,
            validate: { manifest in
                if let modality, manifest.modality != modality {
                    throw ManifestError.invalid(file: manifest.originFile, detail:
                        "modality: family '\(familyName)' of plugin '\(library.name)' reads \(modality), found \(manifest.modality ?? "none")")
                }
                guard let validate = entry.raw.validate else { return }
                let json = try PluginLibrary.json(manifest)
                var error: UnsafeMutablePointer<CChar>?, status: Int32 = 0
                try library.guarded("validate of '\(manifest.id)'", family: familyName) { status = validate(json, &error) }
                if status != 0 {
                    throw ManifestError.invalid(file: manifest.originFile, detail: library.take(error) ?? "refused by plugin '\(library.name)'")
                }
            },
            connectorTokens: { manifest, tokens in library.outputTokens(family: entry.raw, familyName: familyName, manifest: manifest, inputTokens: tokens) },
            create: { manifest, context in
                let instance = try PluginInstance(library: library, family: entry.raw, familyName: familyName, manifest: manifest, context: context)
                switch kind {
                case .encoder: return try PluginEncoder(instance: instance)
                case .connector: return try PluginConnector(instance: instance)
                case .languageModel:  // the ABI has no language-model kind; wrap() refuses others
                    throw PluginError.malformed(library: library.path, detail: "plugin '\(library.name)': plugins cannot build language models")
                }
            })
    }

    /// Set by the first call that crashed: the plugin's state is unknown from then on, so nothing of
    /// it is called again (not even destroy or free: what it holds is left to the process's end).
    private(set) var crash: PluginError?

    /// Runs `body`, a call into the plugin, on the plugins' thread with a crash caught: the crash
    /// becomes PluginError.crashed, thrown now and for every later call.
    func guarded(_ call: String, family: String?, _ body: @escaping () -> Void) throws {
        if let crash { throw crash }
        let plugin = "'\(name)' (\(path))" + (family.map { ", family '\($0)'," } ?? "")
        if let error = Self.runGuarded(plugin: plugin, call: call, body) {
            crash = error
            throw error
        }
    }

    /// Runs `body` through chimera_run_guarded: nil, or the crash as an error. Escaping, since a
    /// crash leaves the closure referenced from the plugins' retired thread (a leak, by design).
    static func runGuarded(plugin: String, call: String, _ body: @escaping () -> Void) -> PluginError? {
        var run = body
        let signal = withUnsafeMutablePointer(to: &run) { chimera_run_guarded({ $0!.assumingMemoryBound(to: (() -> Void).self).pointee() }, $0) }
        return signal == 0 ? nil : .crashed(plugin: plugin, call: call, signal: String(cString: chimera_signal_description(signal)))
    }

    /// Connectors: the plugin's token count for `inputTokens` (nil when it refuses them or crashed),
    /// or `inputTokens` for a family that keeps the count.
    func outputTokens(family: chimera_family, familyName: String, manifest: ComponentManifest, inputTokens: Int) -> Int? {
        guard let outputTokens = family.output_tokens, let json = try? PluginLibrary.json(manifest) else { return inputTokens }
        var n: Int64 = -1
        try? guarded("output_tokens", family: familyName) { n = outputTokens(json, Int64(inputTokens)) }
        return n > 0 ? Int(n) : nil
    }

    /// Takes ownership of a string the plugin returned.
    func take(_ pointer: UnsafeMutablePointer<CChar>?) -> String? {
        guard let pointer else { return nil }
        defer { release(pointer) }
        return String(cString: pointer)
    }

    func release(_ pointer: UnsafeMutableRawPointer?) {
        guard let pointer else { return }
        try? guarded("free", family: nil) { [table] in table.pointee.free(pointer) }  // a crash here is refused from the next call on
    }

    static func json(_ manifest: ComponentManifest) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(manifest), as: UTF8.self)
    }
}

/// A family's C function table; its pointers stay valid while the library is loaded (always).
struct FamilyTable: @unchecked Sendable { let raw: chimera_family }

/// One created plugin component: its handle, destroyed with it.
final class PluginInstance: @unchecked Sendable {
    let library: PluginLibrary
    let family: chimera_family
    let familyName: String
    let manifest: ComponentManifest
    let handle: UnsafeMutableRawPointer
    let contract: [String: JSONValue]
    private(set) var parameters: [(name: String, tensor: Tensor)] = []

    init(library: PluginLibrary, family: chimera_family, familyName: String, manifest: ComponentManifest, context: ComponentBuildContext) throws {
        self.library = library; self.family = family; self.familyName = familyName; self.manifest = manifest
        // Widths the assembler settled replace "auto" before the plugin sees the manifest.
        var settled = manifest
        if let w = context.inputWidth, settled.inputWidth == .auto { settled.inputWidth = .fixed(w) }
        if let w = context.outputWidth, settled.outputWidth == .auto { settled.outputWidth = .fixed(w) }
        let json = try PluginLibrary.json(settled)
        var handle: UnsafeMutableRawPointer?
        var error: UnsafeMutablePointer<CChar>?, status: Int32 = 0
        try library.guarded("create of '\(manifest.id)'", family: familyName) {
            status = family.create(json, manifest.directory.path, &handle, &error)
        }
        let message = library.take(error)
        guard status == 0, let handle else {
            if let handle { Self.destroy(handle, family: family, familyName: familyName, library: library) }
            throw PluginError.failed(plugin: library.name, family: familyName, call: "create of '\(manifest.id)'",
                                     message: message ?? (status == 0 ? "returned no handle" : "status \(status)"))
        }
        self.handle = handle
        var description: UnsafeMutablePointer<CChar>?
        do { try library.guarded("describe", family: familyName) { description = family.describe(handle) } } catch {
            Self.destroy(handle, family: family, familyName: familyName, library: library)
            throw error
        }
        guard let text = library.take(description),
              let parsed = try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)), case let .object(object) = parsed else {
            Self.destroy(handle, family: family, familyName: familyName, library: library)
            throw PluginError.badOutput(plugin: library.name, family: familyName, call: "describe", detail: "no JSON object")
        }
        contract = object
        // From here on the instance is whole: a throw runs deinit, which destroys the handle (once).
        // A count the ABI's int64 index can reach and a plugin could plausibly hold.
        let count = object["parameters"].map { $0.intValue ?? -1 } ?? 0
        guard (0...(1 << 20)).contains(count) else {
            throw PluginError.badOutput(plugin: library.name, family: familyName, call: "describe",
                                        detail: "\"parameters\" must be a count of 0...\(1 << 20) tensors (found \(object["parameters"]!))")
        }
        if count > 0, let parameter = family.parameter {
            for i in 0..<count {
                var name: UnsafePointer<CChar>?
                var view = chimera_tensor()
                var status: Int32 = 0
                try library.guarded("parameter(\(i))", family: familyName) { status = parameter(handle, Int64(i), &name, &view) }
                guard status == 0, let name, let data = view.data,
                      let shape = Self.shape(view) else {
                    throw PluginError.badOutput(plugin: library.name, family: familyName, call: "parameter(\(i))", detail: "no valid tensor view")
                }
                parameters.append((String(cString: name), Tensor(shape: shape, storage: TensorStorage(borrowing: data, count: shape.reduce(1, *), owner: self))))
            }
        }
    }

    deinit { Self.destroy(handle, family: family, familyName: familyName, library: library) }

    /// Destroys a handle, unless the plugin crashed (its state is unknown). A crash in destroy
    /// itself is refused from the next call on: deinit cannot throw.
    static func destroy(_ handle: UnsafeMutableRawPointer, family: chimera_family, familyName: String, library: PluginLibrary) {
        try? library.guarded("destroy", family: familyName) { family.destroy(handle) }
    }

    /// A positive count from the description, at most Int32.max (the ABI passes layer indices as int32).
    func integer(_ key: String) throws -> Int {
        guard let n = contract[key]?.intValue, n > 0, n <= Int(Int32.max) else {
            throw PluginError.badOutput(plugin: library.name, family: familyName, call: "describe",
                                        detail: "no positive integer \"\(key)\" up to \(Int32.max) (found \(contract[key].map { "\($0)" } ?? "nothing"))")
        }
        return n
    }

    static func shape(_ t: chimera_tensor) -> [Int]? {
        guard t.rank >= 1, t.rank <= CHIMERA_TENSOR_MAX_RANK else { return nil }
        let shape = withUnsafeBytes(of: t.shape) { raw in
            let dims = raw.bindMemory(to: Int64.self)
            return (0..<Int(t.rank)).map { Int(dims[$0]) }
        }
        // Garbage dimensions must not trap the host on overflow.
        var count = 1
        for d in shape {
            guard d >= 0 else { return nil }
            let (product, overflow) = count.multipliedReportingOverflow(by: d)
            guard !overflow, product <= 1 << 40 else { return nil }
            count = product
        }
        return shape
    }

    /// Copies a tensor the plugin returned into host memory, checking shape and values.
    func receive(_ out: chimera_tensor, call: String, expectedColumns: Int, expectedRows: Int?) throws -> Tensor {
        defer { library.release(out.data) }
        guard let data = out.data, let shape = Self.shape(out) else {
            throw PluginError.badOutput(plugin: library.name, family: familyName, call: call, detail: "no tensor (rank \(out.rank))")
        }
        try checkCopyable(shape, call: call)
        let rows = shape.count == 1 ? 1 : shape.dropLast().reduce(1, *), columns = shape.last!
        guard columns == expectedColumns, expectedRows == nil || rows == expectedRows else {
            throw PluginError.badOutput(plugin: library.name, family: familyName, call: call,
                detail: "shape \(shape), expected [\(expectedRows.map(String.init) ?? "N"), \(expectedColumns)]")
        }
        let tensor = Tensor(shape: [rows, columns], values: Array(UnsafeBufferPointer(start: data, count: rows * columns)))
        if let bad = (0..<tensor.count).first(where: { !tensor.data[$0].isFinite }) {
            throw PluginError.badOutput(plugin: library.name, family: familyName, call: call,
                detail: "a non-finite value (\(tensor.data[bad]) at row \(bad / columns), column \(bad % columns))")
        }
        return tensor
    }

    /// A tensor the host copies must fit in half of this machine's memory (a garbage shape of a
    /// trillion floats passes `shape`'s overflow check, which borrowed parameters need).
    func checkCopyable(_ shape: [Int], call: String) throws {
        let count = shape.reduce(1, *), most = Int(ProcessInfo.processInfo.physicalMemory / 8)
        guard count <= most else {
            throw PluginError.badOutput(plugin: library.name, family: familyName, call: call,
                                        detail: "a tensor of shape \(shape): \(count) floats, more than half of this machine's memory")
        }
    }

    func forward(_ input: Tensor, layer: Int32, call: String, expectedColumns: Int, expectedRows: Int?) throws -> Tensor {
        var view = chimera_tensor()
        view.data = input.data
        view.rank = Int32(min(input.rank, Int(CHIMERA_TENSOR_MAX_RANK)))
        withUnsafeMutableBytes(of: &view.shape) { raw in
            let dims = raw.bindMemory(to: Int64.self)
            for (i, d) in input.shape.prefix(Int(CHIMERA_TENSOR_MAX_RANK)).enumerated() { dims[i] = Int64(d) }
        }
        let out = try invoke(call) { [family, handle] out, error in withUnsafePointer(to: view) { family.forward(handle, $0, 1, layer, &out, &error) } }
        return try receive(out, call: call, expectedColumns: expectedColumns, expectedRows: expectedRows)
    }

    /// Runs one tensor-returning call; a failure or a crash becomes an error naming the plugin and the call.
    func invoke(_ call: String, _ body: @escaping (inout chimera_tensor, inout UnsafeMutablePointer<CChar>?) -> Int32) throws -> chimera_tensor {
        var out = chimera_tensor()
        var error: UnsafeMutablePointer<CChar>?, status: Int32 = 0
        try library.guarded(call, family: familyName) { status = body(&out, &error) }
        let message = library.take(error)
        guard status == 0 else {
            library.release(out.data)
            throw PluginError.failed(plugin: library.name, family: familyName, call: call, message: message ?? "status \(status)")
        }
        return out
    }
}

/// A plugin encoder seen through the host's protocol.
final class PluginEncoder: ModalityEncoder, @unchecked Sendable {
    let instance: PluginInstance
    let hiddenStateCount: Int
    let output: TokenContract
    init(instance: PluginInstance) throws {
        self.instance = instance
        hiddenStateCount = try instance.integer("hidden_states")
        guard case let .object(o)? = instance.contract["output"], let width = o["width"]?.intValue, let tokens = o["tokens"]?.intValue,
              (1...SizeLimits.width).contains(width), (1...SizeLimits.tokens).contains(tokens) else {
            throw PluginError.badOutput(plugin: instance.library.name, family: instance.familyName, call: "describe",
                                        detail: "no \"output\": {width up to \(SizeLimits.width), tokens up to \(SizeLimits.tokens)}")
        }
        output = TokenContract(width: width, tokens: tokens)
        if let declared = instance.manifest.output, declared.width != width || declared.tokens != tokens {
            throw PluginError.badOutput(plugin: instance.library.name, family: instance.familyName, call: "describe",
                detail: "output {width \(width), tokens \(tokens)} but manifest '\(instance.manifest.id)' declares {width \(declared.width), tokens \(declared.tokens)}")
        }
    }
    var manifest: ComponentManifest { instance.manifest }
    var parameters: [(name: String, tensor: Tensor)] { instance.parameters }

    func prepareInput(contentsOf url: URL) throws -> Tensor {
        let out = try instance.invoke("prepare of \(url.path)") { [instance] out, error in instance.family.prepare(instance.handle, url.path, &out, &error) }
        defer { instance.library.release(out.data) }
        guard let data = out.data, let shape = PluginInstance.shape(out) else {
            throw PluginError.badOutput(plugin: instance.library.name, family: instance.familyName, call: "prepare", detail: "no tensor")
        }
        try instance.checkCopyable(shape, call: "prepare")
        return Tensor(shape: shape, values: Array(UnsafeBufferPointer(start: data, count: shape.reduce(1, *))))
    }

    func hiddenState(_ input: Tensor, layer: Int) throws -> Tensor {
        guard let index = hiddenStateIndex(layer, count: hiddenStateCount) else {
            throw PluginError.failed(plugin: instance.library.name, family: instance.familyName, call: "forward",
                                     message: "feature_layer \(layer) is outside 0..<\(hiddenStateCount)")
        }
        return try instance.forward(input, layer: Int32(index), call: "forward", expectedColumns: output.width, expectedRows: output.tokens)
    }
}

/// A plugin connector seen through the host's protocol.
final class PluginConnector: Connector, @unchecked Sendable {
    let instance: PluginInstance
    let inputWidth: Int
    let outputWidth: Int
    init(instance: PluginInstance) throws {
        self.instance = instance
        inputWidth = try instance.integer("input_width")
        outputWidth = try instance.integer("output_width")
    }
    var manifest: ComponentManifest { instance.manifest }
    var parameters: [(name: String, tensor: Tensor)] { instance.parameters }

    func outputTokens(forInputTokens inputTokens: Int) -> Int? {
        instance.library.outputTokens(family: instance.family, familyName: instance.familyName, manifest: manifest, inputTokens: inputTokens)
    }

    func forward(_ features: Tensor) throws -> Tensor {
        guard features.columns == inputWidth else {
            throw PluginError.failed(plugin: instance.library.name, family: instance.familyName, call: "forward",
                                     message: "features have width \(features.columns), expected \(inputWidth)")
        }
        return try instance.forward(features, layer: 0, call: "forward", expectedColumns: outputWidth,
                                    expectedRows: outputTokens(forInputTokens: features.rows))
    }
}

/// Finds plugin libraries: each folder given is a plugin folder (lib*.so, or a SwiftPM package whose
/// newest of .build/release and .build/debug holds them, with manifests in manifests/) or a folder of them.
public enum PluginDiscovery {
    public static let environmentVariable = "CHIMERA_PLUGINS"

    /// ~/.chimera/plugins (or CHIMERA_USER_HOME/plugins): where `chimera plugin install` copies.
    public static var userDirectory: URL { UserFolders.chimera.appendingPathComponent("plugins") }

    /// --plugins folders, then CHIMERA_PLUGINS (colon-separated), then the user's folder.
    public static func searchDirectories(explicit: [URL]) -> [URL] {
        var dirs = explicit
        if let env = ProcessInfo.processInfo.environment[environmentVariable] {
            dirs += env.split(separator: ":").filter { !$0.isEmpty }.map { URL(fileURLWithPath: String($0)) }
        }
        dirs.append(userDirectory)
        return dirs
    }

    /// (library, manifest folder) pairs under one folder: the folder itself, else its subfolders.
    public static func libraries(in directory: URL) -> [(library: URL, manifests: URL?)] {
        let own = pluginFolder(directory)
        if !own.isEmpty { return own }
        let children = (try? FileManager.default.contentsOfDirectory(at: directory, includingPropertiesForKeys: nil)) ?? []
        // (hidden folders skipped: `plugin install` copies into one before it is complete)
        return children.filter { !$0.lastPathComponent.hasPrefix(".") }.sorted { $0.path < $1.path }.flatMap(pluginFolder)
    }

    static func pluginFolder(_ folder: URL) -> [(library: URL, manifests: URL?)] {
        let fm = FileManager.default
        let manifests = folder.appendingPathComponent("manifests")
        let manifestDir = fm.fileExists(atPath: manifests.path) ? manifests : nil
        func libraries(_ dir: URL) -> [URL] {
            ((try? fm.contentsOfDirectory(atPath: dir.path)) ?? []).filter { $0.hasPrefix("lib") && $0.hasSuffix(".so") }.sorted().map { dir.appendingPathComponent($0) }
        }
        let own = libraries(folder)
        if !own.isEmpty { return own.map { ($0, manifestDir) } }
        // A SwiftPM package: its most recently built configuration.
        func modified(_ urls: [URL]) -> Date {
            urls.compactMap { (try? fm.attributesOfItem(atPath: $0.path))?[.modificationDate] as? Date }.max() ?? .distantPast
        }
        let built = ["release", "debug"].map { libraries(folder.appendingPathComponent(".build/\($0)")) }.filter { !$0.isEmpty }
        return (built.max { modified($0) < modified($1) } ?? []).map { ($0, manifestDir) }
    }
}

/// The plugins of one process, loaded once at start-up.
public struct PluginSet: Sendable {
    public private(set) var libraries: [PluginLibrary] = []
    /// Libraries that were refused, with why: reported, never fatal for the host.
    public private(set) var refused: [(path: String, error: String)] = []

    public init() {}
    /// Libraries already loaded, as they are (load(directories:) skips a plugin found twice).
    init(libraries: [PluginLibrary]) { self.libraries = libraries }

    /// Loads every library in `directories` (missing folders are skipped); a broken library is
    /// recorded in `refused` and the rest still load.
    public static func load(directories: [URL]) -> PluginSet {
        var set = PluginSet()
        var seen: Set<String> = []
        for dir in directories where FileManager.default.fileExists(atPath: dir.path) {
            for (library, manifests) in PluginDiscovery.libraries(in: dir) {
                let path = library.standardizedFileURL.resolvingSymlinksInPath().path
                guard seen.insert(path).inserted else { continue }
                do {
                    let library = try PluginLibrary(path: path, manifestDirectory: manifests)
                    // The same plugin twice (installed, and given with --plugins): the first found is
                    // used; the other's manifests would be duplicate ids.
                    if let first = set.libraries.first(where: { $0.name == library.name }) {
                        set.refused.append((path, "plugin '\(library.name)' \(library.version) (\(path)) is skipped: the same plugin, "
                                                  + "\(first.version), was found first at \(first.path)"))
                        continue
                    }
                    set.libraries.append(library)
                } catch {
                    set.refused.append((path, (error as? LocalizedError)?.errorDescription ?? "\(error)"))
                }
            }
        }
        return set
    }

    /// Registers every plugin family. A name already taken (a built-in, or the same plugin found
    /// twice) keeps the first; the skipped ones are returned as messages to report.
    @discardableResult
    public func register(into registry: FamilyRegistry) -> [String] {
        var skipped: [String] = []
        for library in libraries {
            for family in library.families {
                if let existing = registry.families[family.name] {
                    skipped.append(PluginError.duplicateFamily(name: family.name, first: existing.origin, second: family.origin).errorDescription!
                                   + "; the second is skipped")
                    continue
                }
                try? registry.register(family)  // the name is free: checked above
            }
        }
        return skipped
    }

    /// Adds each plugin's shipped manifests to the catalog.
    public func addManifests(to catalog: inout Catalog) throws {
        for library in libraries {
            if let dir = library.manifestDirectory { try catalog.load(directory: dir) }
        }
    }
}
