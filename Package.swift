// swift-tools-version:6.0
import PackageDescription

// SwiftPM refuses unsafe flags in a package another one depends on by version: as such a dependency
// (checked out under the other package's .build/checkouts, or Xcode's SourcePackages/checkouts),
// Chimera builds with SwiftPM's own optimization settings.
let builtAsDependency = ["/.build/checkouts/", "/SourcePackages/checkouts/"].contains { Context.packageDirectory.contains($0) }

// The modules a decoded token runs through are optimized in debug builds too, so that the tests run
// them as shipped: unoptimized Swift puts temporaries on the heap, hundreds a token, which the test
// that decoding allocates nothing per token would see. -O keeps bounds and overflow checks (and
// these modules use preconditions, not asserts).
let optimizedEvenInDebug: [SwiftSetting] = builtAsDependency ? [] : [.unsafeFlags(["-O"])]

let package = Package(
    name: "Chimera",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "ChimeraTensor", targets: ["ChimeraTensor"]),
        .library(name: "ChimeraIO", targets: ["ChimeraIO"]),
        .library(name: "ChimeraTokenizers", targets: ["ChimeraTokenizers"]),
        .library(name: "ChimeraJinja", targets: ["ChimeraJinja"]),
        .library(name: "Chimera", targets: ["Chimera"]),
        .library(name: "ChimeraComponents", targets: ["ChimeraComponents"]),
        // What plugin packages depend on (Plugins/*/Package.swift).
        .library(name: "ChimeraPluginKit", targets: ["ChimeraPluginKit"]),
        .executable(name: "chimera", targets: ["chimera"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // C libraries from Debian's -dev packages.
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CPNG", pkgConfig: "libpng", providers: [.apt(["libpng-dev"])]),
        .systemLibrary(name: "CJPEG", pkgConfig: "libjpeg", providers: [.apt(["libjpeg62-turbo-dev"])]),
        .systemLibrary(name: "CWebP", pkgConfig: "libwebp", providers: [.apt(["libwebp-dev"])]),

        // Our own C glue around libpng/libjpeg (their error handling needs setjmp/longjmp) and libwebp.
        .target(name: "CImageCodecs", dependencies: ["CPNG", "CJPEG", "CWebP"],
                linkerSettings: [.linkedLibrary("png16"), .linkedLibrary("jpeg"), .linkedLibrary("webp")]),

        // Weight-format kernels (f16/bf16/q8_0/q4_0) with run-time CPU dispatch.
        .target(name: "CChimeraKernels", cSettings: builtAsDependency ? [] : [.unsafeFlags(["-O3"])]),
        .target(name: "ChimeraTensor", dependencies: ["COpenBLAS", "CChimeraKernels"], swiftSettings: optimizedEvenInDebug),
        .target(name: "ChimeraIO", dependencies: ["ChimeraTensor", "CImageCodecs"]),
        .target(name: "ChimeraTokenizers"),
        // Hugging Face chat templates (a Jinja subset) rendered as transformers renders them
        // (optimized in debug builds too: a test runs a million loop iterations).
        .target(name: "ChimeraJinja", swiftSettings: optimizedEvenInDebug),
        // The plugin ABI: one C header, shared by the host and every plugin.
        .target(name: "CChimeraPlugin"),
        // The host's calls into plugins, with a plugin's crash caught (sigsetjmp: C, not Swift).
        .target(name: "CPluginHost", dependencies: ["CChimeraPlugin"]),
        .target(name: "Chimera", dependencies: ["ChimeraTensor", "ChimeraIO", "ChimeraTokenizers", "ChimeraJinja", "CChimeraPlugin", "CPluginHost"]),
        .target(name: "ChimeraPluginKit", dependencies: ["Chimera", "ChimeraTensor", "CChimeraPlugin"]),
        .target(name: "ChimeraComponents", dependencies: ["Chimera", "ChimeraTensor", "ChimeraIO", "ChimeraJinja"], swiftSettings: optimizedEvenInDebug),
        .executableTarget(
            name: "chimera",
            dependencies: [
                "Chimera", "ChimeraComponents", "ChimeraTokenizers",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),

        // `swift package validate-manifests`: chimera validate over every manifest, plugins included.
        .plugin(
            name: "ValidateManifests",
            capability: .command(intent: .custom(verb: "validate-manifests", description: "Validate every Chimera manifest in the package")),
            dependencies: ["chimera"],
            path: "PackagePlugins/ValidateManifests"),

        .testTarget(name: "ChimeraTensorTests", dependencies: ["ChimeraTensor", "CChimeraKernels"]),
        .testTarget(name: "ChimeraIOTests", dependencies: ["ChimeraIO"], resources: [.copy("Fixtures")]),
        .testTarget(name: "ChimeraTokenizersTests", dependencies: ["ChimeraTokenizers"], resources: [.copy("Fixtures")]),
        .testTarget(name: "ChimeraJinjaTests", dependencies: ["ChimeraJinja"], resources: [.copy("Fixtures")]),
        // Test-only: counts each thread's heap allocations (replaces malloc in the test executable).
        .target(name: "CAllocationCounter", path: "Tests/CAllocationCounter"),
        .testTarget(name: "ChimeraTests", dependencies: ["Chimera", "ChimeraComponents", "CAllocationCounter"], resources: [.copy("Fixtures")]),
    ]
)
