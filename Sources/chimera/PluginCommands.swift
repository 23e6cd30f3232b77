import ArgumentParser
import Chimera
import ChimeraIO
import Foundation

/// `chimera plugin list|install|remove`: the plugins in the search folders and the user's folder.
struct PluginCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plugin", abstract: "List, install and remove plugin libraries.",
        subcommands: [PluginList.self, PluginInstall.self, PluginRemove.self])
}

struct PluginList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "Plugins found (and refused), with their families.")
    @OptionGroup var catalogOptions: CatalogOptions
    @Flag(help: "Print JSON") var json = false

    struct Entry: Encodable {
        let name: String; let version: String?; let library: String; let families: [String]; let manifests: String?; let error: String?
    }

    func run() throws {
        let set = catalogOptions.plugins()
        let entries = set.libraries.map {
            Entry(name: $0.name, version: $0.version, library: $0.path, families: $0.families.map { "\($0.name) (\($0.kind.rawValue))" },
                  manifests: $0.manifestDirectory?.path, error: nil)
        } + set.refused.map { Entry(name: "-", version: nil, library: $0.path, families: [], manifests: nil, error: $0.error) }
        if json { try printJSON(entries); return }
        if entries.isEmpty {
            print("no plugins (searched: \(PluginDiscovery.searchDirectories(explicit: catalogOptions.pluginDirectories.map { URL(fileURLWithPath: $0) }).map(\.path).joined(separator: ", ")))")
        }
        for e in entries {
            if let error = e.error { print("✗ \(e.library): \(error)"); continue }
            print("\(e.name) \(e.version ?? "")  \(e.library)")
            for f in e.families { print("    family \(f)") }
            if let m = e.manifests { print("    manifests \(m)") }
        }
    }
}

struct PluginInstall: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "install", abstract: "Copy a plugin (a lib*.so, or a plugin folder / SwiftPM plugin package) into ~/.chimera/plugins/<name>.",
        discussion: "The library is loaded first: a library that is refused is not installed. A folder's manifests/ is copied with it.")
    @Argument(help: "A plugin library or folder") var source: String

    func run() throws {
        do {
            let url = URL(fileURLWithPath: source).standardizedFileURL
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
                throw PluginError.cannotOpen(library: url.path, reason: "no such file or folder")
            }
            let found: [(library: URL, manifests: URL?)] = isDirectory.boolValue
                ? PluginDiscovery.libraries(in: url)
                : [(url, FileManager.default.fileExists(atPath: url.deletingLastPathComponent().appendingPathComponent("manifests").path)
                        ? url.deletingLastPathComponent().appendingPathComponent("manifests") : nil)]
            guard !found.isEmpty else {
                throw PluginError.cannotOpen(library: url.path, reason: "no lib*.so in it (nor in .build/release or .build/debug); build the plugin first")
            }
            for (library, manifests) in found {
                let plugin = try PluginLibrary(path: library.path, manifestDirectory: manifests)
                let target = PluginDiscovery.userDirectory.appendingPathComponent(plugin.name)
                // Copied into a hidden folder beside the target first (discovery skips it), so that a
                // copy that fails or is interrupted leaves an installed version of the plugin as it was.
                let fm = FileManager.default, staging = target.deletingLastPathComponent().appendingPathComponent(".\(plugin.name).installing")
                if fm.fileExists(atPath: staging.path) { try fm.removeItem(at: staging) }
                do {
                    try copyOutputItem(library, to: staging.appendingPathComponent(library.lastPathComponent))
                    if let manifests { try copyOutputItem(manifests, to: staging.appendingPathComponent("manifests")) }
                } catch {
                    try? fm.removeItem(at: staging)
                    throw error
                }
                if fm.fileExists(atPath: target.path) { try fm.removeItem(at: target) }
                try fm.moveItem(at: staging, to: target)
                print("installed \(plugin.name) \(plugin.version) (\(plugin.families.map(\.name).joined(separator: ", "))) in \(target.path)")
            }
        } catch { throw fail(error) }
    }
}

struct PluginRemove: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "remove", abstract: "Delete an installed plugin from ~/.chimera/plugins.")
    @Argument(help: "The plugin's name (as `plugin list` shows it)") var name: String

    func run() throws {
        do {
            let dir = PluginDiscovery.userDirectory
            let installed = ((try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []).sorted()
            guard !name.contains("/"), name != "..", installed.contains(name) else {
                throw PluginError.notInstalled(name: name, directory: dir.path, installed: installed)
            }
            try FileManager.default.removeItem(at: dir.appendingPathComponent(name))
            print("removed \(name)")
        } catch { throw fail(error) }
    }
}
