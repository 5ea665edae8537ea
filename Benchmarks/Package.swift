// swift-tools-version: 6.1
// Throughput and footprint benchmarks for the chpox Store, and the cost of the dirty-page
// trackers' collect, each against a baseline measured in the same run (raw LZ4, memcpy,
// process_vm_readv of the whole target). See README.md; `./run-ratios` prints the ratio table.
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
        // The process the tracker benchmarks freeze: 1 GiB of written pages, dirtying K more
        // on request (see Sources/DirtyTarget/main.c).
        .executableTarget(name: "DirtyTarget"),
        // Dirty-page trackers (uffd-wp, hash; soft-dirty where the kernel has it) against a
        // process_vm_readv of the whole target. Needs DirtyTarget and the main package's
        // chpox-inject built beside it: `run-ratios` builds both first.
        .executableTarget(
            name: "TrackerBenchmarks",
            dependencies: [
                .product(name: "Tracee", package: "chpox"),
                .product(name: "SoftDirty", package: "chpox"),
                .product(name: "Benchmark", package: "benchmark"),
                "DirtyTarget",
            ],
            path: "Benchmarks/TrackerBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
