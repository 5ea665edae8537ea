// swift-tools-version: 6.1
// Throughput and footprint benchmarks for the chpox Store, each against a baseline measured in
// the same run (raw LZ4, memcpy). See README.md; `./run-ratios` prints the ratio table.
import PackageDescription

let package = Package(
    name: "chpox-benchmarks",
    platforms: [.macOS(.v13)],
    dependencies: [
        .package(name: "chpox", path: ".."),
        // MallocInterposer instead of jemalloc, which this machine does not have.
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        // liblz4 for the raw-compression baseline; its own module name, since the Store's
        // CLZ4 is in the same build graph.
        .systemLibrary(name: "CBenchLZ4", pkgConfig: "liblz4", providers: [.apt(["liblz4-dev"])]),
        .executableTarget(
            name: "StoreBenchmarks",
            dependencies: [
                .product(name: "Store", package: "chpox"),
                .product(name: "Benchmark", package: "benchmark"),
                "CBenchLZ4",
            ],
            path: "Benchmarks/StoreBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
