// swift-tools-version:6.0
// A Chimera plugin built as its own shared library: the `chimera` executable is not rebuilt.
// Build: swift build -c release (from this folder); then `chimera --plugins Plugins/AudioEncoder ...`
// or `chimera plugin install Plugins/AudioEncoder`.
import PackageDescription

// SwiftPM names a path dependency by its folder, so the Chimera checkout's folder name (two levels
// up) is the package to take ChimeraPluginKit from. A third-party plugin depends on Chimera by URL
// and writes package: "chimera" instead.
let chimeraFolder = String("\(#filePath)".split(separator: "/").dropLast(3).last!)

let package = Package(
    name: "AudioEncoder",
    products: [.library(name: "AudioEncoder", type: .dynamic, targets: ["AudioEncoder"])],
    dependencies: [.package(path: "../..")],
    targets: [
        .target(
            name: "AudioEncoder",
            dependencies: [.product(name: "ChimeraPluginKit", package: chimeraFolder)],
            // The log-mel DFT runs in Double; optimized even in debug builds so tests stay quick.
            swiftSettings: [.unsafeFlags(["-O"])],
            // The plugin carries its own copy of the Chimera modules; bind its calls to that copy
            // rather than to the host's symbols, so no Swift type or code crosses the C boundary.
            linkerSettings: [.unsafeFlags(["-Xlinker", "-Bsymbolic"])]),
    ]
)
