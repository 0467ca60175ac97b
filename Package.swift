// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "panza",
    platforms: [.macOS(.v15)],
    products: [
        // The engine: memory and SQLite tiers, envelopes, single-flight, memoize, limits.
        // It has no network dependency.
        .library(name: "Panza", targets: ["Panza"]),
        // The shared S3 tier: the only module that depends on AsyncHTTPClient.
        .library(name: "PanzaS3", targets: ["PanzaS3"]),
        // TieredCache as a swift-service-lifecycle Service (flush on SIGTERM), kept apart so that
        // `Panza` itself stays dependency-light.
        .library(name: "PanzaServiceLifecycle", targets: ["PanzaServiceLifecycle"]),
        .executable(name: "panza", targets: ["PanzaCLI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.0"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        // `swift package generate-documentation` for the DocC catalogs (scripts/test builds them).
        .package(url: "https://github.com/swiftlang/swift-docc-plugin.git", from: "1.4.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
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
        // System calls Swift's Glibc module does not import (the current CPU, closing a spawned
        // child's inherited descriptors).
        .systemLibrary(name: "CPanzaSystem"),
        .target(
            name: "Panza",
            dependencies: [
                "CPanzaSQLite",
                "CPanzaLZ4",
                "CPanzaSystem",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ]
        ),
        .target(
            name: "PanzaS3",
            dependencies: [
                "Panza",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ]
        ),
        .target(
            name: "PanzaServiceLifecycle",
            dependencies: [
                "Panza",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "PanzaCLI",
            dependencies: [
                "Panza",
                "PanzaS3",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // A small program the tests start as a real child process (several processes on one file,
        // SIGKILL after flush). It is not a product.
        .executableTarget(
            name: "PanzaTestWorker",
            dependencies: [
                "Panza", "PanzaS3", "PanzaServiceLifecycle", "PanzaTestSupport", "CPanzaSQLite",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/PanzaTestWorker"
        ),
        // Helpers shared by the test targets: temporary folders, child processes, gates.
        .target(
            name: "PanzaTestSupport",
            dependencies: ["Panza"],
            path: "Tests/PanzaTestSupport"
        ),
        .testTarget(
            name: "PanzaTests",
            dependencies: [
                "Panza", "PanzaTestWorker", "PanzaTestSupport",
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ]
        ),
        .testTarget(
            name: "PanzaS3Tests",
            dependencies: [
                "PanzaS3", "Panza", "PanzaTestWorker", "PanzaTestSupport",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
            ]
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
