import Foundation
import PackagePlugin

/// `swift package validate-manifests`: runs `chimera validate` on every Chimera manifest of the
/// package (manifests/ and each Plugins/<name>/manifests/), with each plugin package built and
/// loaded so that its families are known. Weight and tokenizer files need not exist (catalogue
/// manifests point at downloads) unless `--require-files` is given.
@main
struct ValidateManifests: CommandPlugin {
    func performCommand(context: PluginContext, arguments: [String]) async throws {
        let root = context.package.directoryURL
        let chimera = try context.tool(named: "chimera").url
        let fm = FileManager.default
        var folders = [root.appendingPathComponent("manifests")]
        var pluginArguments: [String] = []
        let pluginsRoot = root.appendingPathComponent("Plugins")
        for name in ((try? fm.contentsOfDirectory(atPath: pluginsRoot.path)) ?? []).sorted() {
            let package = pluginsRoot.appendingPathComponent(name)
            guard fm.fileExists(atPath: package.appendingPathComponent("Package.swift").path) else { continue }
            print("building plugin \(name)")
            try run(URL(fileURLWithPath: "/usr/bin/env"), ["swift", "build", "--package-path", package.path])
            pluginArguments += ["--plugins", package.path]
            folders.append(package.appendingPathComponent("manifests"))
        }
        var files: [String] = []
        for folder in folders {
            let walker = fm.enumerator(atPath: folder.path)
            while let relative = walker?.nextObject() as? String {
                guard relative.hasSuffix(".json"), !relative.hasPrefix("schema/") else { continue }
                let path = folder.appendingPathComponent(relative).path
                // Only Chimera manifests: weight-side JSON (config.json, tokenizer.json) has no chimera schema.
                if let data = fm.contents(atPath: path), String(decoding: data.prefix(4096), as: UTF8.self).contains("\"chimera.") {
                    files.append(path)
                }
            }
        }
        // Catalogue manifests name weights users download; `--require-files` also checks those exist.
        let fileChecks = arguments.contains("--require-files") ? [] : ["--skip-file-checks"]
        try run(chimera, ["validate"] + fileChecks + pluginArguments + files.sorted())
    }

    func run(_ executable: URL, _ arguments: [String]) throws {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw ValidationFailed(command: ([executable.lastPathComponent] + arguments.prefix(4)).joined(separator: " "), status: process.terminationStatus)
        }
    }
}

struct ValidationFailed: Error, CustomStringConvertible {
    let command: String
    let status: Int32
    var description: String { "\(command) ... exited with status \(status)" }
}
