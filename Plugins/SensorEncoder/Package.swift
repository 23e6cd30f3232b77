// swift-tools-version:6.0
// A Chimera plugin built as its own shared library: the `chimera` executable is not rebuilt.
// Build: swift build -c release (from this folder); then `chimera --plugins Plugins/SensorEncoder ...`
// or `chimera plugin install Plugins/SensorEncoder`.
import PackageDescription

// SwiftPM names a path dependency by its folder, so the Chimera checkout's folder name (two levels
// up) is the package to take ChimeraPluginKit from. A third-party plugin depends on Chimera by URL
// and writes package: "chimera" instead.
let chimeraFolder = String("\(#filePath)".split(separator: "/").dropLast(3).last!)

let package = Package(
    name: "SensorEncoder",
    products: [.library(name: "SensorEncoder", type: .dynamic, targets: ["SensorEncoder"])],
    dependencies: [.package(path: "../..")],
    targets: [
        .target(
            name: "SensorEncoder",
            dependencies: [.product(name: "ChimeraPluginKit", package: chimeraFolder)],
            // The plugin carries its own copy of the Chimera modules; bind its calls to that copy
            // rather than to the host's symbols, so no Swift type or code crosses the C boundary.
            linkerSettings: [.unsafeFlags(["-Xlinker", "-Bsymbolic"])]),
    ]
)
