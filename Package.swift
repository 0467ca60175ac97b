// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "panza",
    platforms: [.macOS(.v15)],
    products: [
        // The engine: memory and SQLite tiers, envelopes, single-flight, memoize, limits.
        // It has no network dependency.
        .library(name: "Panza", targets: ["Panza"]),
        .executable(name: "panza", targets: ["PanzaCLI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.0"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CPanzaSQLite",
            pkgConfig: "sqlite3",
            providers: [.apt(["libsqlite3-dev"]), .brew(["sqlite"])]
        ),
        .systemLibrary(
            name: "CPanzaLZ4",
            pkgConfig: "liblz4",
            providers: [.apt(["liblz4-dev"]), .brew(["lz4"])]
        ),
        .target(
            name: "Panza",
            dependencies: [
                "CPanzaSQLite",
                "CPanzaLZ4",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "PanzaCLI",
            dependencies: [
                "Panza",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // A small program the tests start as a real child process (several processes on one file,
        // SIGKILL after flush). It is not a product.
        .executableTarget(
            name: "PanzaTestWorker",
            dependencies: ["Panza"],
            path: "Tests/PanzaTestWorker"
        ),
        .testTarget(
            name: "PanzaTests",
            dependencies: ["Panza", "PanzaTestWorker"]
        ),
    ]
)

for target in package.targets where target.type != .system {
    var settings = target.swiftSettings ?? []
    settings.append(contentsOf: [
        .enableUpcomingFeature("ExistentialAny"),
        .enableUpcomingFeature("MemberImportVisibility"),
        .enableUpcomingFeature("InternalImportsByDefault"),
        .enableUpcomingFeature("NonisolatedNonsendingByDefault"),
    ])
    target.swiftSettings = settings
}
