import ChimeraIO
import Foundation

/// Every manifest Chimera knows: the built-in folder, user folders (`--manifests DIR`,
/// CHIMERA_MANIFESTS), and the folder of an assembly file given on the command line. Ids are
/// looked up exactly; a duplicate id is an error naming both files.
public struct Catalog: Sendable {
    public private(set) var components: [String: ComponentManifest] = [:]
    public private(set) var assemblies: [String: AssemblyManifest] = [:]
    public private(set) var templates: [String: ChatTemplate] = [:]
    /// Folders already read, so that a folder named twice is read once.
    private var scanned: Set<String> = []

    public static let environmentVariable = "CHIMERA_MANIFESTS"

    public init() {}

    /// Reads every *.json manifest under `directory` (in its subfolders too unless `recursive` is
    /// false), skipping weight-side files (config.json, tokenizer.json, ... — anything without a
    /// chimera "schema"). An assembly file's own folder is read without its subfolders: it may be
    /// any folder (a home, /tmp), where a walk would be long and meet strangers' manifests.
    public mutating func load(directory: URL, recursive: Bool = true) throws {
        let root = directory.standardizedFileURL.resolvingSymlinksInPath().path
        // A folder read whole covers a later read of its top; not the other way round.
        guard !scanned.contains(root + "/**"), scanned.insert(recursive ? root + "/**" : root).inserted else { return }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: root, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ManifestError.unreadable(file: root, reason: "not a directory")
        }
        var files: [String] = []
        if recursive {
            let enumerator = FileManager.default.enumerator(atPath: root)
            while let relative = enumerator?.nextObject() as? String {
                if relative.hasSuffix(".json") { files.append(relative) }
            }
        } else {
            files = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).filter { $0.hasSuffix(".json") }
        }
        for relative in files.sorted() {
            let url = URL(fileURLWithPath: root).appendingPathComponent(relative)
            guard isChimeraManifest(url) else { continue }
            try add(AnyManifest.load(contentsOf: url))
        }
    }

    /// Loads a single manifest file (and nothing else).
    public mutating func load(file: URL) throws -> AnyManifest {
        let manifest = try AnyManifest.load(contentsOf: file)
        try add(manifest)
        return manifest
    }

    public mutating func add(_ manifest: AnyManifest) throws {
        switch manifest {
        case let .component(m): try Self.insert(m, id: m.id, origin: m.origin, into: &components, origin: \.origin)
        case let .assembly(m): try Self.insert(m, id: m.id, origin: m.origin, into: &assemblies, origin: \.origin)
        case let .template(m): try Self.insert(m, id: m.id, origin: m.origin, into: &templates, origin: \.origin)
        }
    }

    /// The same file read twice is one manifest; the same id from two files is an error naming both.
    private static func insert<M>(_ m: M, id: String, origin: String, into table: inout [String: M], origin existingOrigin: KeyPath<M, String>) throws {
        if let existing = table[id] {
            if existing[keyPath: existingOrigin] == origin { return }
            throw ManifestError.duplicateID(id: id, first: existing[keyPath: existingOrigin], second: origin)
        }
        table[id] = m
    }

    public func component(_ id: String, kind: ComponentKind? = nil) throws -> ComponentManifest {
        if let m = components[id], let kind, m.kind != kind {
            // Not "unknown": the id exists, as another kind.
            throw ManifestError.invalid(file: m.originFile, detail: "kind: '\(id)' is of kind \(m.kind.rawValue), expected kind \(kind.rawValue)")
        }
        guard let m = components[id] else {
            let known = components.values.filter { kind == nil || $0.kind == kind }.map(\.id).sorted()
            throw ManifestError.unknownID(id: id, kind: kind?.rawValue.replacingOccurrences(of: "_", with: " ") ?? "component", known: known)
        }
        return m
    }

    public func assembly(_ id: String) throws -> AssemblyManifest {
        guard let m = assemblies[id] else {
            throw ManifestError.unknownID(id: id, kind: "assembly", known: assemblies.keys.sorted())
        }
        return m
    }

    public func template(_ id: String) throws -> ChatTemplate {
        guard let m = templates[id] else {
            throw ManifestError.unknownID(id: id, kind: "chat template", known: templates.keys.sorted())
        }
        return m
    }

    /// Components filtered by kind, modality and family, sorted by id.
    public func list(kind: ComponentKind? = nil, modality: String? = nil, family: String? = nil) -> [ComponentManifest] {
        components.values
            .filter { kind == nil || $0.kind == kind }
            .filter { modality == nil || $0.modality == modality }
            .filter { family == nil || $0.family == family }
            .sorted { $0.id < $1.id }
    }

    private func isChimeraManifest(_ url: URL) -> Bool {
        guard notARegularFile(url.path) == nil, let data = FileManager.default.contents(atPath: url.path), data.count < 4_000_000 else { return false }
        guard let parsed = try? JSONSerialization.jsonObject(with: data) else {
            // Unparseable JSON that claims to be a manifest must still be reported.
            let text = String(decoding: data.prefix(4096), as: UTF8.self)
            return text.contains("\"schema\"") && text.contains("\"chimera.")
        }
        // Parseable JSON without a chimera "schema" (config.json, tokenizer.json, the JSON Schemas in
        // manifests/schema/, which mention "chimera.component/v1" as a const) is not a manifest.
        guard let object = parsed as? [String: Any], let schema = object["schema"] as? String else { return false }
        return schema.hasPrefix("chimera.")
    }

    /// The built-in manifest folder: CHIMERA_HOME/manifests, or the `manifests` folder of the
    /// source tree the executable was built in, or ./manifests.
    public static func builtinDirectory(executable: String = CommandLine.arguments.first ?? "") -> URL? {
        let fm = FileManager.default
        var candidates: [URL] = []
        if let home = ProcessInfo.processInfo.environment["CHIMERA_HOME"] {
            candidates.append(URL(fileURLWithPath: home).appendingPathComponent("manifests"))
        }
        var dir = URL(fileURLWithPath: executable).resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<6 {
            candidates.append(dir.appendingPathComponent("manifests"))
            dir = dir.deletingLastPathComponent()
        }
        candidates.append(URL(fileURLWithPath: fm.currentDirectoryPath).appendingPathComponent("manifests"))
        return candidates.first { fm.fileExists(atPath: $0.appendingPathComponent("schema").path) }
    }

    /// Built-ins, then CHIMERA_MANIFESTS (colon-separated), then explicit folders.
    public static func standard(extraDirectories: [URL] = []) throws -> Catalog {
        var catalog = Catalog()
        if let builtin = builtinDirectory() { try catalog.load(directory: builtin) }
        if let env = ProcessInfo.processInfo.environment[environmentVariable] {
            for path in env.split(separator: ":") where !path.isEmpty {
                try catalog.load(directory: URL(fileURLWithPath: String(path)))
            }
        }
        for dir in extraDirectories { try catalog.load(directory: dir) }
        return catalog
    }
}
