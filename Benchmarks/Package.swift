// swift-tools-version: 6.1
// Panza's benchmarks, in a package of their own so that users of Panza never build the
// benchmark dependency. Run them with `swift package benchmark` from this folder
// (or `scripts/benchmark` from the root).
import PackageDescription

let package = Package(
    name: "PanzaBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "panza", path: ".."),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        // SHA-256, the baseline of the shared bucket's signatures (Panza signs with it too).
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.0"..<"5.0.0"),
        // Only the MallocInterposer trait: the default RuntimeInterposer needs a package that
        // is not available on this machine kind.
        .package(url: "https://github.com/ordo-one/benchmark.git", from: "1.38.0", traits: ["MallocInterposer"]),
    ],
    targets: [
        // The baselines call SQLite and LZ4 directly, through their own module maps.
        .systemLibrary(name: "CBaselineSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(name: "CBaselineLZ4", pkgConfig: "liblz4", providers: [.apt(["liblz4-dev"])]),
        // The tests' fault-injecting TCP proxy (a symbolic link to Tests/PanzaTestSupport), for
        // miss latencies with S3 blackholed or slow.
        .target(name: "BenchmarkFaultProxy"),
        .executableTarget(
            name: "PanzaBenchmarks",
            dependencies: [
                .product(name: "Panza", package: "panza"),
                .product(name: "PanzaS3", package: "panza"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "Crypto", package: "swift-crypto"),
                "CBaselineSQLite",
                "CBaselineLZ4",
                "BenchmarkFaultProxy",
            ],
            path: "Benchmarks/PanzaBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
