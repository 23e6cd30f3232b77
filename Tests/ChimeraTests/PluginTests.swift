import ChimeraComponents
import ChimeraTensor
import Foundation
import Testing
@testable import Chimera

/// Plugins the tests build: C variants of Fixtures/plugins/test_plugin.c (good and broken), and the
/// two Swift plugin packages under Plugins/ (each built once per test run, in its own .build).
enum TestPlugins {
    static let fixtures = packageRoot.appendingPathComponent("Tests/ChimeraTests/Fixtures/plugins")
    static let modes = ["GOOD", "WRONG_ABI", "NO_ENTRY", "NULL_TABLE", "CREATE_FAILS", "WRONG_SHAPE", "NON_FINITE", "NO_FORWARD", "FORWARD_FAILS", "HUGE_PARAMETERS", "DOT_NAME", "HUGE_OUTPUT",
                               "FORWARD_SEGFAULTS", "FORWARD_TRAPS", "CREATE_ABORTS", "ENTRY_SEGFAULTS", "FORWARD_OVERFLOWS_STACK",
                               "CONSTRUCTOR_SEGFAULTS", "CONSTRUCTOR_HANGS"]

    struct CommandFailed: Error, CustomStringConvertible { let description: String }

    static func run(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        process.currentDirectoryURL = packageRoot
        let log = temporaryDirectory().appendingPathComponent("log")
        try #require(FileManager.default.createFile(atPath: log.path, contents: nil))
        let handle = try FileHandle(forWritingTo: log)
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        process.waitUntilExit()
        try handle.close()
        guard process.terminationStatus == 0 else {
            throw CommandFailed(description: "\(arguments.joined(separator: " ")) failed:\n\(String(decoding: try Data(contentsOf: log), as: UTF8.self).suffix(3000))")
        }
    }

    /// Folder per mode, each holding lib<mode>.so and the c-scale manifest in manifests/.
    static let cPlugins: Result<URL, CommandFailed> = Result {
        let root = temporaryDirectory()
        for mode in modes {
            let folder = root.appendingPathComponent(mode)
            try FileManager.default.createDirectory(at: folder.appendingPathComponent("manifests"), withIntermediateDirectories: true)
            try FileManager.default.copyItem(at: fixtures.appendingPathComponent("c-scale.component.json"),
                                             to: folder.appendingPathComponent("manifests/c-scale.component.json"))
            try run(["cc", "-shared", "-fPIC", "-DMODE=\(mode)", "-I", packageRoot.appendingPathComponent("Sources/CChimeraPlugin/include").path,
                     fixtures.appendingPathComponent("test_plugin.c").path, "-o", folder.appendingPathComponent("lib\(mode.lowercased()).so").path])
        }
        return root
    }.mapError { $0 as? CommandFailed ?? CommandFailed(description: "\($0)") }

    static func cPlugin(_ mode: String) throws -> URL {
        let root = try cPlugins.get()
        return root.appendingPathComponent("\(mode)/lib\(mode.lowercased()).so")
    }

    static func buildPackage(_ name: String) -> Result<URL, CommandFailed> {
        let folder = packageRoot.appendingPathComponent("Plugins/\(name)")
        let command = ["swift", "build", "--package-path", folder.path]
        // After files were added to the root package (a merge), the plugin's incremental build was
        // seen compiling the root's modules with their old file lists ("cannot find type ..."); a
        // clean build of the plugin package then succeeds. After a file was added to the root's
        // C kernels, the incremental build linked without it (dlopen: "undefined symbol"): the same cure.
        // After a stored property was added to a root struct, the incremental build loaded and then
        // crashed in `create` (a file compiled against the old layout): so whenever the root's
        // sources changed since the plugin was last built, it is built clean.
        let library = folder.appendingPathComponent(".build/debug/lib\(name).so").path
        let stamp = folder.appendingPathComponent(".build/chimera-sources.stamp"), sources = rootSourcesStamp()
        if (try? String(contentsOf: stamp, encoding: .utf8)) != sources {
            try? run(["swift", "package", "--package-path", folder.path, "clean"])
        }
        // Left loaded: Swift libraries must not be unloaded (the runtime keeps their metadata), and
        // the tests load this one anyway.
        func loads() -> Bool { dlopen(library, RTLD_NOW | RTLD_LOCAL) != nil }
        return Result {
            do {
                try run(command)
                if !loads() { throw CommandFailed(description: "\(library) does not load: \(dlerror().map { String(cString: $0) } ?? "?")") }
            } catch {
                try run(["swift", "package", "--package-path", folder.path, "clean"])
                try run(command)
            }
            try sources.write(to: stamp, atomically: true, encoding: .utf8)
            return folder
        }
            .mapError { $0 as? CommandFailed ?? CommandFailed(description: "\($0)") }
    }
    /// Every file under the root's Sources with its size and modification time.
    static func rootSourcesStamp() -> String {
        let sources = packageRoot.appendingPathComponent("Sources")
        let files = FileManager.default.enumerator(at: sources, includingPropertiesForKeys: [.fileSizeKey, .contentModificationDateKey])
        return (files?.compactMap { item -> String? in
            guard let url = item as? URL, let values = try? url.resourceValues(forKeys: [.fileSizeKey, .contentModificationDateKey]),
                  let size = values.fileSize, let date = values.contentModificationDate else { return nil }
            return "\(url.path) \(size) \(date.timeIntervalSince1970)"
        } ?? []).sorted().joined(separator: "\n")
    }

    static let sensor = buildPackage("SensorEncoder")
    static let audio = buildPackage("AudioEncoder")

    /// Built-ins plus the plugins in `folders`, and the catalog with their manifests.
    static func environment(_ folders: [URL]) throws -> (Catalog, FamilyRegistry, PluginSet) {
        let set = PluginSet.load(directories: folders)
        let registry = BuiltinFamilies.registry()
        #expect(set.register(into: registry).isEmpty)
        var catalog = try Catalog.standard()
        try set.addManifests(to: &catalog)
        return (catalog, registry, set)
    }
}

func message(_ body: () throws -> Void) -> String {
    do { try body(); return "(no error)" } catch { return (error as? LocalizedError)?.errorDescription ?? "\(error)" }
}

func reference(_ file: String) throws -> [String: Any] {
    try JSONSerialization.jsonObject(with: Data(contentsOf: TestPlugins.fixtures.appendingPathComponent(file))) as! [String: Any]
}

func floats(_ any: Any?) -> [Float] { (any as! [NSNumber]).map(\.floatValue) }

func maxDifference(_ t: Tensor, _ expected: [Float]) -> Float {
    #expect(t.count == expected.count, "\(t.shape) holds \(t.count) values, the reference \(expected.count)")
    return zip(t.toArray(), expected).map { abs($0 - $1) }.max() ?? .infinity
}

@Suite struct PluginABITests {
    @Test func brokenLibrariesAreRefusedByName() throws {
        let cases: [(String, String)] = [
            ("WRONG_ABI", "ABI version 42, but this chimera speaks version 1"),
            ("NO_ENTRY", "no entry point chimera_plugin_entry"),
            ("NULL_TABLE", "chimera_plugin_entry() returned NULL"),
            ("NO_FORWARD", "plugin 'c-test', family 'c-scale': missing forward"),
        ]
        for (mode, expected) in cases {
            let path = try TestPlugins.cPlugin(mode).path
            let text = message { _ = try PluginLibrary(path: path) }
            #expect(text.contains(expected), "\(mode): \(text)")
            #expect(text.contains("lib\(mode.lowercased()).so"), "\(mode) names the library: \(text)")
        }
        let missing = message { _ = try PluginLibrary(path: "/nonexistent/libnothing.so") }
        #expect(missing.contains("plugin /nonexistent/libnothing.so: cannot load library"), "\(missing)")
    }

    /// The c-scale connector of one variant, built through the registry as the assembler does.
    func connector(_ mode: String) throws -> any Connector {
        let (catalog, registry, set) = try TestPlugins.environment([try TestPlugins.cPlugin(mode).deletingLastPathComponent()])
        #expect(set.refused.isEmpty, "\(set.refused)")
        return try #require(try registry.build(try catalog.component("c-scale-8")) as? any Connector)
    }

    @Test func goodCPluginRunsAsAConnector() throws {
        let c = try connector("GOOD")
        #expect(c.inputWidth == 8 && c.outputWidth == 8)
        let x = Tensor(shape: [3, 8], values: (0..<24).map { Float($0) / 10 })
        let y = try c.forward(x)
        #expect(y.shape == [3, 8])
        #expect(y.toArray() == x.toArray().map { 2 * $0 })
        let (_, registry, _) = try TestPlugins.environment([try TestPlugins.cPlugin("GOOD").deletingLastPathComponent()])
        #expect(registry.families["c-scale"]?.origin.hasPrefix("plugin c-test (") == true)
    }

    @Test func failingCallsAreReportedNotFatal() throws {
        #expect(message { _ = try connector("CREATE_FAILS") }
            == "plugin 'c-test', family 'c-scale': create of 'c-scale-8' failed: the weights are not where I expected them")
        let x = Tensor(shape: [3, 8], values: (0..<24).map(Float.init))
        let wrong = try connector("WRONG_SHAPE")
        #expect(message { _ = try wrong.forward(x) } == "plugin 'c-test', family 'c-scale': forward returned shape [3, 9], expected [3, 8]")
        let nan = try connector("NON_FINITE")
        #expect(message { _ = try nan.forward(x) } == "plugin 'c-test', family 'c-scale': forward returned a non-finite value (nan at row 2, column 7)")
        let failing = try connector("FORWARD_FAILS")
        #expect(message { _ = try failing.forward(x) } == "plugin 'c-test', family 'c-scale': forward failed: forward is unhappy")
        #expect(message { _ = try failing.forward(Tensor(zeros: [2, 5])) }.contains("features have width 5, expected 8"))
        // Refused after the instance is whole: its handle is destroyed once (twice was a double free).
        #expect(message { _ = try connector("HUGE_PARAMETERS") }.contains("\"parameters\" must be a count of 0...1048576 tensors (found 1e+300)"))
        // A shape of 2^39 floats was copied from a buffer of 24.
        #expect(message { _ = try connector("HUGE_OUTPUT").forward(x) }.contains("forward returned a tensor of shape [68719476736, 8]: 549755813888 floats, more than half of this machine's memory"))
    }

    /// A plugin that crashes (a bad pointer, a trap, abort, a stack overflow) is reported as such
    /// and never called again; the host and the other plugins go on.
    @Test func crashesAreCaughtNotFatal() throws {
        let x = Tensor(shape: [3, 8], values: (0..<24).map(Float.init))
        for (mode, signal) in [("FORWARD_SEGFAULTS", "SIGSEGV (invalid memory access)"), ("FORWARD_TRAPS", "SIGILL (illegal instruction"),
                               ("FORWARD_OVERFLOWS_STACK", "SIGSEGV (invalid memory access)")] {
            let crashing = try connector(mode)
            let first = message { _ = try crashing.forward(x) }
            #expect(first.hasPrefix("plugin 'c-test' (") && first.contains(", family 'c-scale', crashed in forward: \(signal)")
                    && first.hasSuffix("it is not called again in this process (fix or remove the plugin)"), "\(mode): \(first)")
            #expect(message { _ = try crashing.forward(x) } == first, "\(mode): refused, not called again")
            #expect(try connector("GOOD").forward(x).toArray() == x.toArray().map { 2 * $0 }, "after \(mode)")
        }
        #expect(message { _ = try connector("CREATE_ABORTS") }.contains("family 'c-scale', crashed in create of 'c-scale-8': SIGABRT (abort)"))
        let entry = message { _ = try PluginLibrary(path: try TestPlugins.cPlugin("ENTRY_SEGFAULTS").path) }
        #expect(entry.contains("libentry_segfaults.so crashed in chimera_plugin_entry(): SIGSEGV"), "\(entry)")
    }

    @Test func aPluginNameThatIsNoFolderNameIsRefused() throws {
        // `plugin install` makes the name a folder: ".." would replace the plugins folder's parent.
        let set = PluginSet.load(directories: [try TestPlugins.cPlugin("DOT_NAME").deletingLastPathComponent()])
        #expect(set.libraries.isEmpty && set.refused.count == 1 && set.refused[0].error.contains("plugin name '..'"), "\(set.refused)")
    }

    @Test func aBrokenLibraryDoesNotStopTheOthers() throws {
        let root = try TestPlugins.cPlugins.get()
        let set = PluginSet.load(directories: [root.appendingPathComponent("GOOD"), root.appendingPathComponent("WRONG_ABI")])
        #expect(set.libraries.map(\.name) == ["c-test"])
        #expect(set.refused.count == 1 && set.refused[0].error.contains("ABI version 42"))
        let result = try CLI.run(["plugin", "list", "--plugins", root.appendingPathComponent("GOOD").path, "--plugins", root.appendingPathComponent("NULL_TABLE").path])
        #expect(result.status == 0, "\(result.all)")
        #expect(result.stdout.contains("c-test 1") && result.stdout.contains("family c-scale (connector)"), "\(result.stdout)")
        #expect(result.stdout.contains("✗") && result.stdout.contains("returned NULL"), "\(result.stdout)")
        let list = try CLI.run(["list", "--plugins", root.appendingPathComponent("WRONG_ABI").path])
        #expect(list.status == 0 && list.stderr.contains("warning: plugin 'libwrong_abi.so'"), "\(list.all)")
        // A library that crashes as it is opened is a warning too; the command runs on.
        let crashing = try CLI.run(["list", "--kind", "connector", "--plugins", root.appendingPathComponent("ENTRY_SEGFAULTS").path,
                                    "--plugins", root.appendingPathComponent("GOOD").path])
        #expect(crashing.status == 0 && crashing.stdout.contains("c-scale-8")
                && crashing.stderr.contains("libentry_segfaults.so crashed in chimera_plugin_entry(): SIGSEGV"), "\(crashing.all)")
        // So is one whose load-time constructor crashes or never returns (inside dlopen, where no
        // guard reaches: the CLI loads each library in a child of its own first).
        let constructors = try CLI.run(["list", "--kind", "connector", "--plugins", root.appendingPathComponent("CONSTRUCTOR_SEGFAULTS").path,
                                        "--plugins", root.appendingPathComponent("CONSTRUCTOR_HANGS").path,
                                        "--plugins", root.appendingPathComponent("GOOD").path])
        #expect(constructors.status == 0 && constructors.stdout.contains("c-scale-8"), "\(constructors.all)")
        #expect(constructors.stderr.contains("libconstructor_segfaults.so: cannot load library: it crashed as it was loaded, in its load-time constructors: SIGSEGV"),
                "\(constructors.all)")
        #expect(constructors.stderr.contains("libconstructor_hangs.so: cannot load library: loading it did not finish within 10 s"), "\(constructors.all)")
        let install = try CLI.run(["plugin", "install", try TestPlugins.cPlugin("CONSTRUCTOR_SEGFAULTS").path],
                                  environment: ["CHIMERA_USER_HOME": temporaryDirectory().path])
        #expect(install.status != 0 && install.stderr.contains("it crashed as it was loaded"), "\(install.all)")
    }

    @Test func aFamilyNameTakenTwiceKeepsTheFirst() throws {
        let root = try TestPlugins.cPlugins.get()
        // Both libraries are plugin 'c-test': found in two folders (installed, and given with
        // --plugins), the second is skipped whole, so its manifests are not duplicate ids.
        let found = PluginSet.load(directories: [root.appendingPathComponent("GOOD"), root.appendingPathComponent("CREATE_FAILS")])
        #expect(found.libraries.count == 1 && found.refused.count == 1
                && found.refused[0].error.contains("libcreate_fails.so) is skipped: the same plugin, 1, was found first at")
                && found.refused[0].error.contains("libgood.so"), "\(found.refused)")
        // Two libraries defining one family name: the first registered keeps it.
        let set = PluginSet(libraries: [try PluginLibrary(path: try TestPlugins.cPlugin("GOOD").path),
                                        try PluginLibrary(path: try TestPlugins.cPlugin("CREATE_FAILS").path)])
        let registry = BuiltinFamilies.registry()
        let skipped = set.register(into: registry)
        #expect(skipped.count == 1 && skipped[0].contains("component family 'c-scale' is defined by plugin c-test (") && skipped[0].contains("libcreate_fails.so"), "\(skipped)")
        #expect(registry.families["c-scale"]?.origin.contains("libgood.so") == true)
    }

    @Test func installAndRemove() throws {
        let home = temporaryDirectory()
        let good = try TestPlugins.cPlugin("GOOD").deletingLastPathComponent()
        let install = try CLI.run(["plugin", "install", good.path], environment: ["CHIMERA_USER_HOME": home.path])
        #expect(install.status == 0 && install.stdout.contains("installed c-test 1 (c-scale)"), "\(install.all)")
        #expect(FileManager.default.fileExists(atPath: home.appendingPathComponent("plugins/c-test/manifests/c-scale.component.json").path))
        // The library keeps its permissions (executable, as the linker made it), not a plain file's.
        func permissions(_ path: String) throws -> Int { try (FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int) ?? -1 }
        let built = try TestPlugins.cPlugin("GOOD").path
        let installed = home.appendingPathComponent("plugins/c-test/\((built as NSString).lastPathComponent)").path
        #expect(try permissions(built) & 0o111 != 0 && permissions(installed) == permissions(built))
        let list = try CLI.run(["list", "--kind", "connector"], environment: ["CHIMERA_USER_HOME": home.path])
        #expect(list.stdout.contains("c-scale-8") && list.stdout.contains("family: plugin c-test ("), "\(list.all)")
        // Installed and given with --plugins: the one from --plugins is used, the other skipped (its
        // manifests made every command fail on duplicate ids).
        let both = try CLI.run(["list", "--kind", "connector", "--plugins", good.path], environment: ["CHIMERA_USER_HOME": home.path])
        #expect(both.status == 0 && both.stdout.contains("c-scale-8") && both.stderr.contains("is skipped: the same plugin, 1, was found first at"),
                "\(both.all)")
        let refused = try CLI.run(["plugin", "install", try TestPlugins.cPlugin("WRONG_ABI").path], environment: ["CHIMERA_USER_HOME": home.path])
        #expect(refused.status != 0 && refused.stderr.contains("ABI version 42"), "\(refused.all)")
        // A FIFO among the manifests is refused by name, not waited on forever, and the installed
        // copy stays as it was.
        let fifoFolder = temporaryDirectory()
        try FileManager.default.copyItem(at: good, to: fifoFolder.appendingPathComponent("p"))
        let fifo = fifoFolder.appendingPathComponent("p/manifests/notes")
        #expect(mkfifo(fifo.path, 0o644) == 0)
        let blocked = try CLI.run(["plugin", "install", fifoFolder.appendingPathComponent("p").path], environment: ["CHIMERA_USER_HOME": home.path])
        #expect(blocked.status != 0 && blocked.stderr.contains("\(fifo.path): cannot copy it: it is not a regular file"), "\(blocked.all)")
        #expect(FileManager.default.fileExists(atPath: home.appendingPathComponent("plugins/c-test/manifests/c-scale.component.json").path))
        #expect(!FileManager.default.fileExists(atPath: home.appendingPathComponent("plugins/.c-test.installing").path))
        // What an interrupted install leaves (a hidden staging folder) is not loaded as a plugin.
        let leftover = home.appendingPathComponent("plugins/.c-test.installing")
        try FileManager.default.createDirectory(at: leftover, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: try TestPlugins.cPlugin("GOOD"), to: leftover.appendingPathComponent("libgood.so"))
        let plugins = try CLI.run(["plugin", "list"], environment: ["CHIMERA_USER_HOME": home.path])
        #expect(plugins.status == 0 && plugins.stdout.contains("c-test") && !plugins.all.contains(".c-test.installing"), "\(plugins.all)")
        try FileManager.default.removeItem(at: leftover)
        // A link to a folder inside (here one back to its parent) is refused, not followed round.
        try FileManager.default.removeItem(at: fifo)
        try FileManager.default.createSymbolicLink(atPath: fifoFolder.appendingPathComponent("p/manifests/loop").path, withDestinationPath: "..")
        let looped = try CLI.run(["plugin", "install", fifoFolder.appendingPathComponent("p").path], environment: ["CHIMERA_USER_HOME": home.path])
        #expect(looped.status != 0 && looped.stderr.contains("manifests/loop: cannot copy it: a link to a folder"), "\(looped.all)")
        // A FIFO named like a library is not opened (dlopen would wait on it), whether installed or found.
        let fifoLibrary = fifoFolder.appendingPathComponent("libfifo.so")
        #expect(mkfifo(fifoLibrary.path, 0o644) == 0)
        let fifoInstall = try CLI.run(["plugin", "install", fifoLibrary.path], environment: ["CHIMERA_USER_HOME": home.path])
        #expect(fifoInstall.status != 0 && fifoInstall.stderr.contains("\(fifoLibrary.path): cannot load library: it is not a regular file"), "\(fifoInstall.all)")
        let listed = try CLI.run(["list", "--plugins", fifoFolder.path], environment: ["CHIMERA_USER_HOME": home.path])
        #expect(listed.status == 0 && listed.stderr.contains("warning: plugin \(fifoLibrary.path): cannot load library"), "\(listed.all)")
        let remove = try CLI.run(["plugin", "remove", "c-test"], environment: ["CHIMERA_USER_HOME": home.path])
        #expect(remove.status == 0, "\(remove.all)")
        #expect(!FileManager.default.fileExists(atPath: home.appendingPathComponent("plugins/c-test").path))
        let again = try CLI.run(["plugin", "remove", "c-test"], environment: ["CHIMERA_USER_HOME": home.path])
        #expect(again.status != 0 && again.stderr.contains("no plugin 'c-test' is installed"), "\(again.all)")
    }

}

@Suite struct SensorPluginTests {
    func encoder() throws -> any ModalityEncoder {
        let (catalog, registry, _) = try TestPlugins.environment([try TestPlugins.sensor.get()])
        return try #require(try registry.build(try catalog.component("sensor-tiny")) as? any ModalityEncoder)
    }

    @Test func matchesTheReference() throws {
        let encoder = try encoder()
        let ref = try reference("sensor_reference.json")
        let input = try encoder.prepareInput(contentsOf: packageRoot.appendingPathComponent("Plugins/SensorEncoder/manifests/sample.csv"))
        #expect(input.shape == [64, 3])
        #expect(maxDifference(input, floats(ref["input"])) < 1e-5)
        #expect(maxDifference(try encoder.hiddenState(input, layer: 1), floats(ref["hidden_1"])) < 1e-4)
        #expect(maxDifference(try encoder.hiddenState(input, layer: -1), floats(ref["last"])) < 1e-4)
        #expect(encoder.parameters.contains { $0.name == "layers.1.self_attn.q_proj.weight" && $0.tensor.shape == [32, 32] })
    }

    @Test func badRecordingsAreRefused() throws {
        let encoder = try encoder()
        let dir = temporaryDirectory()
        func refusal(_ name: String, _ text: String) -> String {
            let url = dir.appendingPathComponent(name)
            try? text.write(to: url, atomically: true, encoding: .utf8)
            return message { _ = try encoder.prepareInput(contentsOf: url) }
        }
        #expect(refusal("a.csv", "temperature,humidity\n1,2\n").contains("missing channel vibration (found: humidity, temperature)"))
        #expect(refusal("b.csv", "temperature,humidity,vibration\n1,2,x\n").contains("row 2, column 'vibration': 'x' is not a finite number"))
        #expect(refusal("c.csv", "temperature,humidity,vibration\n" + String(repeating: "1,2,3\n", count: 65)).contains("65 readings, the encoder takes at most 64"))
        #expect(refusal("d.json", "{\"temperature\": [1, 2], \"humidity\": [1, 2], \"vibration\": [1]}").contains("channels have different lengths"))
        // Read as a spreadsheet or a JSON writer meant them, or refused: not 0x10 as 16, not the first of
        // two columns of one name, not true as 1.
        #expect(refusal("hex.csv", "temperature,humidity,vibration\n0x10,2,3\n").contains("row 2, column 'temperature': '0x10' is not a finite number (decimal"))
        #expect(refusal("inf.csv", "temperature,humidity,vibration\ninf,2,3\n").contains("'inf' is not a finite number"))
        let twice = refusal("twice.csv", "temperature,humidity,temperature,vibration\n1,2,3,4\n")
        #expect(twice.contains("the header names column 'temperature' twice (columns 1 and 3)"), "\(twice)")
        let bool = refusal("bool.json", "{\"temperature\": [1, true], \"humidity\": [1, 2], \"vibration\": [1, 2]}")
        #expect(bool.contains("channel 'temperature', reading 1 is not a number"), "\(bool)")
        #expect(refusal("scalar.json", "{\"temperature\": 1}").contains("channel 'temperature' is not an array of numbers"))
        #expect(refusal("list.json", "[1, 2]").contains("the top level is not an object"))
        #expect(refusal("big.json", "{\"temperature\": [1e39]}").contains("channel 'temperature', reading 0: 1e+39 is beyond a 32-bit float's range"))
        #expect(refusal("broken.json", "{\"temperature\": [1,").contains("not valid JSON"))
        let plain = try encoder.prepareInput(contentsOf: packageRoot.appendingPathComponent("Plugins/SensorEncoder/manifests/sample.csv"))
        let withBOM = dir.appendingPathComponent("bom.csv")
        try Data([0xEF, 0xBB, 0xBF] + (try Data(contentsOf: packageRoot.appendingPathComponent("Plugins/SensorEncoder/manifests/sample.csv")))).write(to: withBOM)
        #expect(try encoder.prepareInput(contentsOf: withBOM).toArray() == plain.toArray())
        let json = try encoder.prepareInput(contentsOf: { let u = dir.appendingPathComponent("e.json")
            try! "{\"temperature\": [1, 3], \"humidity\": [5, 5], \"vibration\": [0, 2]}".write(to: u, atomically: true, encoding: .utf8); return u }())
        #expect(abs(json.data[0] + 1) < 1e-4 && json.data[1] == 0 && abs(json.data[3] - 1) < 1e-4 && json.data[6] == 0)
    }

    @Test func validateUsesThePluginsChecks() throws {
        let folder = try TestPlugins.sensor.get()
        let dir = temporaryDirectory()
        let text = try String(contentsOf: packageRoot.appendingPathComponent("Plugins/SensorEncoder/manifests/sensor-tiny.component.json"), encoding: .utf8)
        let bad = dir.appendingPathComponent("bad.component.json")
        try text.replacingOccurrences(of: "\"patch_size\": 8", with: "\"patch_size\": 7").write(to: bad, atomically: true, encoding: .utf8)
        let result = try CLI.run(["validate", bad.path, "--plugins", folder.path])
        #expect(result.status != 0 && result.stderr.contains("\(bad.path): config.patch_size: window 64 is not a multiple of patch_size 7"), "\(result.all)")
        let image = dir.appendingPathComponent("image.component.json")
        try text.replacingOccurrences(of: "\"modality\": \"sensor\"", with: "\"modality\": \"image\"").write(to: image, atomically: true, encoding: .utf8)
        let wrongModality = try CLI.run(["validate", image.path, "--plugins", folder.path])
        #expect(wrongModality.stderr.contains("modality: family 'sensor-patch-transformer' of plugin 'sensor-encoder' reads sensor, found image"), "\(wrongModality.all)")
        // A copy whose weights are elsewhere: refused for the missing file unless file checks are skipped.
        let copy = dir.appendingPathComponent("copy.component.json")
        try text.write(to: copy, atomically: true, encoding: .utf8)
        let missing = try CLI.run(["validate", copy.path, "--plugins", folder.path])
        #expect(missing.status != 0 && missing.stderr.contains("weights.files[0]: \(dir.path)/weights/sensor-tiny.safetensors does not exist"), "\(missing.all)")
        let skipped = try CLI.run(["validate", copy.path, "--plugins", folder.path, "--skip-file-checks"])
        #expect(skipped.status == 0 && skipped.stdout.contains("ok (sensor-tiny)"), "\(skipped.all)")
        let good = try CLI.run(["validate", "Plugins/SensorEncoder/manifests/sensor-tiny.component.json", "--plugins", folder.path])
        #expect(good.status == 0 && good.stdout.contains("ok (sensor-tiny)"), "\(good.all)")
    }

    @Test func runsEndToEndFromTheCLI() throws {
        let folder = try TestPlugins.sensor.get()
        let list = try CLI.run(["list", "--plugins", folder.path, "--modality", "sensor"])
        #expect(list.stdout.contains("sensor-tiny") && list.stdout.contains("family: plugin sensor-encoder ("), "\(list.all)")
        let compat = try CLI.run(["compat", "sensor-tiny", "--plugins", folder.path])
        #expect(compat.stdout.contains("✓ sensor-tiny → mlp2x-gelu-fresh → chimera-tiny-default-llm"), "\(compat.all)")
        let run = try CLI.run(["generate", "--plugins", folder.path, "--assembly", "sensor-tiny-default",
                               "--prompt", "Readings: <sensor> Summary:", "--max-tokens", "6", "--json"])
        #expect(run.status == 0, "\(run.all)")
        let out = try CLI.json(run.stdout) as? [String: Any]
        #expect((out?["tokens"] as? [Int])?.count == 6, "\(run.stdout)")
        // The first run's greedy tokens are deterministic: the same command again gives the same.
        let again = try CLI.run(["generate", "--plugins", folder.path, "--assembly", "sensor-tiny-default",
                                 "--prompt", "Readings: <sensor> Summary:", "--max-tokens", "6", "--json"])
        #expect((try CLI.json(again.stdout) as? [String: Any])?["tokens"] as? [Int] == out?["tokens"] as? [Int])
    }
}

/// A mono 16-bit PCM WAV file.
func wav(samples: [Int16], rate: UInt32) -> Data {
    wav(body: samples.flatMap { le($0) }, rate: rate, tag: 1, bits: 16)
}

/// The little-endian bytes of an integer.
func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }

/// A mono WAV file holding `body` as its data chunk: format `tag` (1 PCM, 3 float), plain or as
/// WAVE_FORMAT_EXTENSIBLE with `subformatSuffix` (the standard GUID's when nil); `dataSize`
/// overrides what the data chunk claims.
func wav(body: [UInt8], rate: UInt32, tag: UInt16, bits: UInt16, extensible: Bool = false,
         subformatSuffix: [UInt8]? = nil, dataSize: UInt32? = nil) -> Data {
    let align = bits / 8
    var fmt = le(extensible ? UInt16(0xFFFE) : tag) + le(UInt16(1)) + le(rate) + le(rate * UInt32(align)) + le(align) + le(bits)
    if extensible {
        fmt += le(UInt16(22)) + le(bits) + le(UInt32(4)) + le(tag)
        fmt += subformatSuffix ?? [0, 0, 0, 0, 0x10, 0, 0x80, 0, 0, 0xAA, 0, 0x38, 0x9B, 0x71]
    }
    let chunks = Array("fmt ".utf8) + le(UInt32(fmt.count)) + fmt + Array("data".utf8) + le(dataSize ?? UInt32(body.count)) + body
    return Data(Array("RIFF".utf8) + le(UInt32(4 + chunks.count)) + Array("WAVE".utf8) + chunks)
}

@Suite struct AudioPluginTests {
    func build(_ id: String) throws -> any Component {
        let (catalog, registry, _) = try TestPlugins.environment([try TestPlugins.audio.get()])
        return try registry.build(try catalog.component(id))
    }
    var sample: URL { packageRoot.appendingPathComponent("Plugins/AudioEncoder/manifests/sample.wav") }

    @Test func logMelMatchesWhisperFeatureExtractor() throws {
        let encoder = try #require(try build("whisper-tiny-random") as? any ModalityEncoder)
        let ref = try reference("audio_reference.json")
        let features = try encoder.prepareInput(contentsOf: sample)
        #expect(features.shape == [80, 200])
        #expect(maxDifference(features, floats(ref["features"])) < 1e-4)
    }

    @Test func encoderMatchesWhisperEncoder() throws {
        let encoder = try #require(try build("whisper-tiny-random") as? any ModalityEncoder)
        let ref = try reference("audio_reference.json")
        // On transformers' own features (isolates the encoder), then from the WAV file.
        let features = Tensor(shape: [80, 200], values: floats(ref["features"]))
        #expect(maxDifference(try encoder.hiddenState(features, layer: -1), floats(ref["last"])) < 1e-4)
        #expect(maxDifference(try encoder.hiddenState(features, layer: 1), floats(ref["hidden_1"])) < 1e-4)
        #expect(maxDifference(try encoder.hiddenState(try encoder.prepareInput(contentsOf: sample), layer: -1), floats(ref["last"])) < 1e-3)
        let projector = try #require(try build("whisper-tiny-projector") as? any Connector)
        let last = Tensor(shape: [100, 32], values: floats(ref["last"]))
        let projected = try projector.forward(last)
        #expect(projected.shape == [50, 48])
        #expect(maxDifference(projected, floats(ref["projected"])) < 1e-4)
    }

    @Test func with128MelsToo() throws {
        let (_, registry, _) = try TestPlugins.environment([try TestPlugins.audio.get()])
        var catalog = Catalog()
        try catalog.load(directory: TestPlugins.fixtures.appendingPathComponent("whisper128"))
        let encoder = try #require(try registry.build(try catalog.component("whisper128-test")) as? any ModalityEncoder)
        let ref = try reference("whisper128/reference.json")
        let features = try encoder.prepareInput(contentsOf: sample)
        #expect(features.shape == [128, 200])
        var first20: [Float] = []
        for m in 0..<128 { for f in 0..<20 { first20.append(features.data[m * 200 + f]) } }
        #expect(maxDifference(Tensor(shape: [128, 20], values: first20), floats(ref["features_first_20_frames"])) < 1e-4)
        #expect(maxDifference(try encoder.hiddenState(features, layer: -1), floats(ref["last"])) < 1e-3)
    }

    @Test func unsupportedAudioIsRefused() throws {
        let encoder = try #require(try build("whisper-tiny-random") as? any ModalityEncoder)
        let text = message { _ = try encoder.prepareInput(contentsOf: TestPlugins.fixtures.appendingPathComponent("tone-44k.wav")) }
        #expect(text.contains("plugin 'audio-encoder', family 'whisper-encoder': prepare of") && text.contains("sample rate 44100 Hz; this encoder takes 16000 Hz"), "\(text)")
        let long = temporaryDirectory().appendingPathComponent("long.wav")
        try wav(samples: [Int16](repeating: 100, count: 16000 * 3), rate: 16000).write(to: long)
        let tooLong = message { _ = try encoder.prepareInput(contentsOf: long) }
        #expect(tooLong.contains("3.0 s of audio; this encoder takes at most 2 s"), "\(tooLong)")
        let notWav = message { _ = try encoder.prepareInput(contentsOf: TestPlugins.fixtures.appendingPathComponent("c-scale.component.json")) }
        #expect(notWav.contains("not a RIFF/WAVE file"), "\(notWav)")
    }

    /// The same clip as 16, 24 and 32-bit PCM, 32 and 64-bit float, EXTENSIBLE and with a streamed
    /// (unknown) data length gives the same features; 8-bit silence reads as 16-bit silence.
    @Test func wavSampleFormatsReadAlike() throws {
        let encoder = try #require(try build("whisper-tiny-random") as? any ModalityEncoder)
        var samples: [Int16] = (0..<8000).map { Int16(12000 * sin(Double($0) * 0.05)) }
        samples[10] = .min; samples[11] = .max  // the extremes scale exactly in every width
        let dir = temporaryDirectory()
        func features(_ data: Data, _ name: String) throws -> Tensor {
            let url = dir.appendingPathComponent(name)
            try data.write(to: url)
            return try encoder.prepareInput(contentsOf: url)
        }
        let reference = try features(wav(samples: samples, rate: 16000), "s16.wav")
        let variants: [(String, Data)] = [
            ("s24.wav", wav(body: samples.flatMap { Array(le(Int32($0) << 8).prefix(3)) }, rate: 16000, tag: 1, bits: 24)),
            ("s32.wav", wav(body: samples.flatMap { le(Int32($0) << 16) }, rate: 16000, tag: 1, bits: 32)),
            ("f32.wav", wav(body: samples.flatMap { le((Float($0) / 32768).bitPattern) }, rate: 16000, tag: 3, bits: 32)),
            ("f64.wav", wav(body: samples.flatMap { le((Double($0) / 32768).bitPattern) }, rate: 16000, tag: 3, bits: 64)),
            ("ext16.wav", wav(body: samples.flatMap { le($0) }, rate: 16000, tag: 1, bits: 16, extensible: true)),
            ("extf32.wav", wav(body: samples.flatMap { le((Float($0) / 32768).bitPattern) }, rate: 16000, tag: 3, bits: 32, extensible: true)),
            ("streamed.wav", wav(body: samples.flatMap { le($0) }, rate: 16000, tag: 1, bits: 16, dataSize: 0xFFFF_FFFF)),
        ]
        for (name, data) in variants {
            #expect(maxDifference(try features(data, name), reference.toArray()) == 0, "\(name)")
        }
        let silence8 = try features(wav(body: [UInt8](repeating: 128, count: 4000), rate: 16000, tag: 1, bits: 8), "u8.wav")
        #expect(maxDifference(silence8, try features(wav(samples: [Int16](repeating: 0, count: 4000), rate: 16000), "zero16.wav").toArray()) == 0)
    }

    /// A truncated data chunk, an empty one, an unknown EXTENSIBLE sub-format and a non-finite float
    /// sample are named, not read as silence or noise.
    @Test func damagedWavFilesAreRefused() throws {
        let encoder = try #require(try build("whisper-tiny-random") as? any ModalityEncoder)
        let dir = temporaryDirectory()
        func refusal(_ data: Data, _ name: String) -> String {
            let url = dir.appendingPathComponent(name)
            return message { try data.write(to: url); _ = try encoder.prepareInput(contentsOf: url) }
        }
        let body = [Int16](repeating: 5, count: 100).flatMap { le($0) }
        let truncated = refusal(wav(body: body, rate: 16000, tag: 1, bits: 16, dataSize: 4000), "truncated.wav")
        #expect(truncated.contains("the data chunk claims 4000 bytes but the file holds 200 after its start (a truncated file?)"), "\(truncated)")
        let empty = refusal(wav(body: [], rate: 16000, tag: 1, bits: 16), "empty.wav")
        #expect(empty.contains("the data chunk holds no samples"), "\(empty)")
        let guid = refusal(wav(body: body, rate: 16000, tag: 1, bits: 16, extensible: true, subformatSuffix: [UInt8](repeating: 1, count: 14)), "guid.wav")
        #expect(guid.contains("WAVE_FORMAT_EXTENSIBLE with a sub-format other than PCM or IEEE float"), "\(guid)")
        let alaw = refusal(wav(body: [1, 2, 3], rate: 16000, tag: 6, bits: 8), "alaw.wav")
        #expect(alaw.contains("format 6 with 8-bit samples; supported are PCM (format 1)"), "\(alaw)")
        let nan = refusal(wav(body: le(Float.nan.bitPattern), rate: 16000, tag: 3, bits: 32), "nan.wav")
        #expect(nan.contains("sample 0 is not a finite number"), "\(nan)")
    }

    /// One prompt with two sensor recordings and one audio clip, each placeholder bound to its own
    /// plugin encoder and connector.
    @Test func multiInputPromptFromTheCLI() throws {
        let sensor = try TestPlugins.sensor.get(), audio = try TestPlugins.audio.get()
        let dir = temporaryDirectory()
        let assembly = """
        { "schema": "chimera.assembly/v1", "id": "sensor-audio-test", "language_model": "chimera-tiny-default-llm",
          "inputs": [ { "placeholder": "<sensor>", "encoder": "sensor-tiny", "feature_layer": -1, "select": "full", "connector": "mlp2x-gelu-fresh" },
                      { "placeholder": "<audio>", "encoder": "whisper-tiny-random", "feature_layer": -1, "select": "full", "connector": "audio-pool-projector-fresh" } ] }
        """
        try assembly.write(to: dir.appendingPathComponent("a.assembly.json"), atomically: true, encoding: .utf8)
        let csv = packageRoot.appendingPathComponent("Plugins/SensorEncoder/manifests/sample.csv").path
        let run = try CLI.run(["generate", "--plugins", sensor.path, "--plugins", audio.path, "--assembly", dir.appendingPathComponent("a.assembly.json").path,
                               "--prompt", "A <sensor> B <sensor> C <audio> D", "--input", "sensor=\(csv)", "--input", "sensor=\(csv)",
                               "--input", "audio=\(sample.path)", "--max-tokens", "3", "--json"])
        #expect(run.status == 0, "\(run.all)")
        let out = try CLI.json(run.stdout) as? [String: Any]
        let promptTokens = try #require(out?["prompt_tokens"] as? Int)
        #expect(promptTokens > 8 + 8 + 50 && promptTokens < 8 + 8 + 50 + 20, "\(run.stdout)")
        let missing = try CLI.run(["generate", "--plugins", sensor.path, "--plugins", audio.path, "--assembly", dir.appendingPathComponent("a.assembly.json").path,
                                   "--prompt", "A <sensor> C <audio>", "--input", "sensor=\(csv)", "--max-tokens", "3"])
        #expect(missing.status != 0 && missing.stderr.contains("the prompt holds 1 <audio> placeholder but 0 inputs were given"), "\(missing.all)")
    }
}
