import Foundation
import Testing

/// SwiftPM refuses a package that another one depends on by version when its targets carry unsafe
/// build flags: Chimera's (-O for the decode modules and the Jinja renderer in debug builds, -O3 for the kernels) apply only
/// when it is built itself, not from another package's .build/checkouts.
@Suite struct PackageManifestTests {
    /// The targets whose settings hold unsafe flags, with Package.swift copied into `folder`.
    func targetsWithUnsafeFlags(packageIn folder: URL) throws -> [String] {
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: CLI.packageRoot.appendingPathComponent("Package.swift"),
                                         to: folder.appendingPathComponent("Package.swift"))
        let process = Process(), output = Pipe()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["swift", "package", "dump-package"]
        process.currentDirectoryURL = folder
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        try #require(process.terminationStatus == 0, "swift package dump-package failed in \(folder.path)")
        let package = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let targets = try #require(package["targets"] as? [[String: Any]])
        return try targets.filter { target in
            String(decoding: try JSONSerialization.data(withJSONObject: target), as: UTF8.self).contains("unsafeFlags")
        }.compactMap { $0["name"] as? String }.sorted()
    }

    @Test func unsafeFlagsOnlyWhenBuiltItself() throws {
        let scratch = try CLI.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: scratch) }
        #expect(try targetsWithUnsafeFlags(packageIn: scratch.appendingPathComponent("chimera"))
                == ["CChimeraKernels", "ChimeraComponents", "ChimeraJinja", "ChimeraTensor"])
        #expect(try targetsWithUnsafeFlags(packageIn: scratch.appendingPathComponent("app/.build/checkouts/chimera")) == [])
    }
}
