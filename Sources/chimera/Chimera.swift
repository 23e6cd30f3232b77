import ArgumentParser
import Chimera
import ChimeraComponents
import ChimeraIO
import ChimeraTensor
import Foundation

@main
struct ChimeraCommand: ParsableCommand {
    static func main() {
        // Restart once with OPENBLAS_CORETYPE set when OpenBLAS misdetected the CPU (see blasCoreCorrection).
        if let core = ComputeThreads.blasCoreCorrection() {
            setenv("OPENBLAS_CORETYPE", core, 1)
            let arguments = CommandLine.arguments.map { strdup($0) } + [nil]
            execv("/proc/self/exe", arguments)  // returns only on failure: then run as is
        }
        // Plugin libraries are first loaded by a child of this program (see PluginLibrary.loadProbe).
        let arguments = CommandLine.arguments
        if arguments.count == 3, arguments[1] == probePluginLoadArgument { PluginLibrary.loadInProbeChild(arguments[2]) }
        PluginLibrary.loadProbe = PluginLibrary.childLoadProbe(executable: URL(fileURLWithPath: "/proc/self/exe"),
                                                                arguments: [probePluginLoadArgument])
        // As ParsableCommand.main, but an error thrown while a subcommand runs comes with that
        // subcommand's usage, not the root's.
        var command: any ParsableCommand
        do { command = try parseAsRoot() } catch { exit(withError: error) }
        do { try command.run() } catch let error as ValidationError {
            let usage = usageString(for: type(of: command))
            let path = usage.split(separator: " ").prefix { !"<[-".contains($0.first ?? "-") }.joined(separator: " ")
            FileHandle.standardError.write(Data("Error: \(error.message)\nUsage: \(usage)\n  See '\(path) --help' for more information.\n".utf8))
            exit(withError: ExitCode.validationFailure)
        } catch { exit(withError: error) }
    }

    /// The child's first argument (not a subcommand users see).
    static let probePluginLoadArgument = "--probe-plugin-load"

    static let configuration = CommandConfiguration(
        commandName: "chimera",
        abstract: "Compose small multimodal models from parts, check what fits, and run them on the CPU.",
        version: chimeraVersion,
        subcommands: [List.self, Show.self, Compat.self, Assemble.self, Validate.self, Generate.self, Import.self, Plan.self,
                      Bench.self, Quantize.self, Perplexity.self, PluginCommand.self])
}

/// `chimera --version`: the release, and the plugin ABI it speaks (what a plugin must match).
let chimeraVersion = "0.31.0 (plugin ABI \(PluginLibrary.abiVersion))"

/// Where stored weight matrices live while a model runs (`generate`, `bench --assembly`).
struct WeightPlacementOptions: ParsableArguments {
    @Flag(help: "Read weight matrices in place from the memory-mapped files instead of copying them into huge pages at load (no copy at load; decode slower)")
    var mappedWeights = false

    /// Kept as stored either way (f16/bf16/quantized are never widened for inference).
    var storedMatrices: StoredMatrices { mappedWeights ? .mapped : .resident }
}

/// How many threads `generate` and `bench` compute on.
struct ThreadOptions: ParsableArguments {
    @Option(parsing: .unconditional, help: "Threads (default: CHIMERA_THREADS, or every core)") var threads: Int?

    /// At parse time, so that the message comes with the subcommand's usage.
    func validate() throws {
        if let threads, !(1...ComputeThreads.most).contains(threads) {
            throw ValidationError("--threads must be 1...\(ComputeThreads.most), found \(threads)")
        }
        // (ComputeThreads would ignore a value it cannot use: the variable is named instead.)
        if threads == nil, let value = ProcessInfo.processInfo.environment["CHIMERA_THREADS"],
           !(Int(value).map { (1...ComputeThreads.most).contains($0) } ?? false) {
            throw ValidationError("CHIMERA_THREADS must be 1...\(ComputeThreads.most), found '\(value)'")
        }
    }

    func apply() { ComputeThreads.configure(threads) }
}

/// How `generate` and `bench` choose tokens (greedy unless a temperature above 0 is given).
struct SamplingOptions: ParsableArguments {
    @Option(parsing: .unconditional, help: "0 = greedy") var temperature: Float?
    @Option(parsing: .unconditional, help: "Sample among the K most likely tokens (0: every token, over a model's own top_k)") var topK: Int?
    @Option(parsing: .unconditional, help: "Nucleus sampling mass") var topP: Float?
    @Option(parsing: .unconditional, help: "Divide the logits of tokens already in the prompt or answer by this (transformers' repetition_penalty; 1 = none; only the answer's where a placeholder is no vocabulary token, as TinyLLaVA's)")
    var repetitionPenalty: Float?
    @Option(parsing: .unconditional, help: "Sampling seed (0 or more)") var seed: UInt64 = 0  // (unconditional: "-1" is named as a bad value, not a missing one)
}

/// Options every command that reads manifests shares.
struct CatalogOptions: ParsableArguments {
    @Option(name: .customLong("manifests"), help: ArgumentHelp("Extra folder of manifests (repeatable); also CHIMERA_MANIFESTS.", valueName: "dir"))
    var directories: [String] = []
    @Option(name: .customLong("plugins"), help: ArgumentHelp("Extra folder of plugins (repeatable); also CHIMERA_PLUGINS and ~/.chimera/plugins.", valueName: "dir"))
    var pluginDirectories: [String] = []

    func catalog(including file: URL? = nil) throws -> Catalog {
        var catalog = try Catalog.standard(extraDirectories: directories.map { URL(fileURLWithPath: $0) } + [Catalog.userDirectory].compactMap { $0 })
        try plugins().addManifests(to: &catalog)
        if let file { try catalog.load(directory: file.deletingLastPathComponent(), recursive: false) }
        return catalog
    }

    /// Plugins found in --plugins, CHIMERA_PLUGINS and the user's folder, loaded once per process;
    /// a refused library is reported on stderr and the rest still work.
    func plugins() -> PluginSet {
        let dirs = PluginDiscovery.searchDirectories(explicit: pluginDirectories.map { URL(fileURLWithPath: $0) })
        if let loaded = LoadedPlugins.set { return loaded }
        let set = PluginSet.load(directories: dirs)
        for refused in set.refused { progress("warning: \(refused.error)") }
        LoadedPlugins.set = set
        return set
    }

    /// Built-in families plus every plugin family.
    func families() -> FamilyRegistry {
        let registry = BuiltinFamilies.registry()
        for warning in plugins().register(into: registry) { progress("warning: \(warning)") }
        return registry
    }
}

/// The process's plugins: a command runs once, so they are loaded once.
enum LoadedPlugins {
    nonisolated(unsafe) static var set: PluginSet?
}

/// Errors reach the user as one clear message on stderr and a non-zero exit code.
func fail(_ error: Error) -> ExitCode {
    let message = (error as? LocalizedError)?.errorDescription ?? "\(error)"
    FileHandle.standardError.write(Data("error: \(message)\n".utf8))
    return ExitCode.failure
}

/// Prints `value` as JSON on stdout: indented, or on one line (a JSON-lines stream).
func printJSON<T: Encodable>(_ value: T, oneLine: Bool = false) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = oneLine ? [.sortedKeys, .withoutEscapingSlashes] : [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
    fflush(nil)  // a line of a stream reaches its reader at once, not at exit
}

/// The UTF-8 text of the file a flag names (stdin for "-"), or a ValidationError naming both.
func readText(_ path: String, flag: String) throws -> String {
    let data: Data
    if path == "-" { data = FileHandle.standardInput.readDataToEndOfFile() } else {
        if let reason = notARegularFile(path) { throw ValidationError("\(flag) \(path): \(reason)") }
        guard let contents = FileManager.default.contents(atPath: path) else { throw ValidationError("\(flag) \(path): no such file or not readable") }
        data = contents
    }
    guard let text = String(data: data, encoding: .utf8) else { throw ValidationError("\(flag) \(path): not UTF-8 text") }
    return text
}

func progress(_ line: String) {
    FileHandle.standardError.write(Data("\(line)\n".utf8))
}

extension Catalog {
    /// ~/.chimera/manifests (or CHIMERA_USER_HOME/manifests): where `chimera import` writes by default.
    static var importDirectory: URL { UserFolders.chimera.appendingPathComponent("manifests") }
    /// The import folder when there is one.
    static var userDirectory: URL? { FileManager.default.fileExists(atPath: importDirectory.path) ? importDirectory : nil }
}
