// swift-tools-version: 6.1
// Throughput and footprint benchmarks for the chpox Store, the cost of the dirty-page
// trackers' collect, of live checkpoints and of restarts, each against a baseline measured in
// the same run (raw LZ4, memcpy, process_vm_readv of the target, the store's own page reads).
// See README.md; `./run-ratios` prints the ratio table.
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
                "TargetProcess",
            ],
            path: "Benchmarks/StoreBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        // The process the tracker and checkpoint benchmarks freeze: 1 GiB of written pages
        // (or, `mixed`, a third each zero, text and random), dirtying K more on request (see
        // Sources/DirtyTarget/main.c).
        .executableTarget(name: "DirtyTarget"),
        // The tree the tree benchmark checkpoints: processes sharing pages copy-on-write after
        // fork, each with pages of its own, each writing 1% of its pages on request (see
        // Sources/TreeTarget/main.c).
        .executableTarget(name: "TreeTarget"),
        // The processes the network benchmark runs: a network namespace's keeper, a server
        // holding N accepted connections, their client (see Sources/NetTarget/main.c).
        .executableTarget(name: "NetTarget"),
        // What the benchmarks share: starting and driving a DirtyTarget, scratch stores, a
        // seeded generator (SplitMix64), and the notes run-ratios reads.
        .target(name: "TargetProcess", dependencies: [.product(name: "Store", package: "chpox")]),
        // A target's memory read from outside, as the checkpoint, scale and S3 benchmarks need
        // it: its resident pages, their hashes, the pages changed since, their LZ4 size in the
        // Store's frames, a digest of the whole region to compare a restarted process with.
        .target(
            name: "TargetMemory",
            dependencies: [
                .product(name: "Incremental", package: "chpox"),
                .product(name: "Store", package: "chpox"),
                .product(name: "Tracee", package: "chpox"),
                .product(name: "SoftDirty", package: "chpox"),
                "CBenchLZ4",
                "TargetProcess",
            ]),
        // Dirty-page trackers (uffd-wp, hash; soft-dirty where the kernel has it) against a
        // process_vm_readv of the whole target. Needs DirtyTarget and the main package's
        // chpox-inject built beside it: `run-ratios` builds both first.
        .executableTarget(
            name: "TrackerBenchmarks",
            dependencies: [
                .product(name: "Tracee", package: "chpox"),
                .product(name: "SoftDirty", package: "chpox"),
                .product(name: "Benchmark", package: "benchmark"),
                "TargetProcess",
                "DirtyTarget",
            ],
            path: "Benchmarks/TrackerBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        // chpox against CRIU 4.2 on one 1 GiB mixed target in one run: full dump (stop-and-copy
        // and pre-copy) against `criu dump --leave-running`, restart against `criu restore -d`
        // (a plain executable, run by `run-ratios --criu-only`; needs DirtyTarget, chpox-inject,
        // chpox-restore-stub and CRIU).
        .executableTarget(
            name: "VersusCriu",
            dependencies: [
                .product(name: "Incremental", package: "chpox"),
                .product(name: "Store", package: "chpox"),
                "TargetProcess",
                "DirtyTarget",
            ],
            path: "Benchmarks/VersusCriu"
        ),
        // Runs a program as its child and reports its peak resident memory, untainted by the
        // large process that starts it (see Sources/PeakRSS/main.c).
        .executableTarget(name: "PeakRSS"),
        // How costs grow with the process's size (1, 4, 16 GiB, up to $CHPOX_SCALE_GIB): full base,
        // 1% delta, restart, lazy restart, GC, cpx's own peak memory; and a chain of 1,000
        // generations (a plain executable, run by `run-ratios --scale-only`; needs DirtyTarget,
        // PeakRSS, chpox-inject, chpox-restore-stub, cpx and dumpinfo).
        .executableTarget(
            name: "Scale",
            dependencies: [
                .product(name: "Incremental", package: "chpox"),
                .product(name: "Store", package: "chpox"),
                .product(name: "Tracee", package: "chpox"),
                "TargetProcess",
                "TargetMemory",
                "DirtyTarget",
                "PeakRSS",
            ],
            path: "Benchmarks/Scale"
        ),
        // Live checkpoints of a 1 GiB mixed target (full base with and without pre-copy, a 1%
        // delta, a second identical process) against process_vm_readv + LZ4 of its resident
        // pages in the same run. Needs DirtyTarget and chpox-inject, as the tracker benchmarks.
        .executableTarget(
            name: "CheckpointBenchmarks",
            dependencies: [
                .product(name: "Incremental", package: "chpox"),
                .product(name: "Store", package: "chpox"),
                .product(name: "Tracee", package: "chpox"),
                .product(name: "SoftDirty", package: "chpox"),
                .product(name: "Benchmark", package: "benchmark"),
                "CBenchLZ4",
                "TargetProcess",
                "TargetMemory",
                "DirtyTarget",
            ],
            path: "Benchmarks/CheckpointBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        // Restarting the 1 GiB mixed target from a full base against reading its pages back
        // from the store, and rebuilding the page map of chains 1, 100 and 1000 generations
        // deep, in the same run. Needs DirtyTarget, chpox-inject and chpox-restore-stub built
        // beside it: `run-ratios` builds them first.
        .executableTarget(
            name: "RestartBenchmarks",
            dependencies: [
                .product(name: "Incremental", package: "chpox"),
                .product(name: "Store", package: "chpox"),
                .product(name: "Benchmark", package: "benchmark"),
                "TargetProcess",
                "DirtyTarget",
            ],
            path: "Benchmarks/RestartBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        // A tree of 8 processes (256 MiB shared copy-on-write, 32 MiB private each) against one
        // 1 GiB process, and against `criu dump --leave-running` of each, in the same run. Needs
        // TreeTarget and chpox-inject built beside it, and CRIU ($CHPOX_CRIU): `run-ratios`.
        .executableTarget(
            name: "TreeBenchmarks",
            dependencies: [
                .product(name: "Incremental", package: "chpox"),
                .product(name: "Store", package: "chpox"),
                .product(name: "Benchmark", package: "benchmark"),
                "TargetProcess",
                "TreeTarget",
            ],
            path: "Benchmarks/TreeBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        // Files kept with generations: a 1 GiB file 1% rewritten between generations, bytes stored
        // against the LZ4 size of the rewritten bytes, pause against cpx --no-files (README.md).
        // A plain executable (it prints its table): `swift run -c release FileBenchmark`.
        .executableTarget(
            name: "FileBenchmark",
            dependencies: [
                .product(name: "Incremental", package: "chpox"),
                .product(name: "Store", package: "chpox"),
                "CBenchLZ4",
                "TargetProcess",
            ],
            path: "Benchmarks/FileBenchmark"
        ),
        // The extra pause per established TCP connection: a server with 0, 100 and 1,000
        // connections from a client outside its tree, in a network namespace of its own,
        // checkpointed by cpx and dumped by `criu dump --leave-running --tcp-established` in the
        // same run. Needs NetTarget, cpx, dumpinfo and chpox-inject built beside it, CRIU
        // ($CHPOX_CRIU) and nsenter: `run-ratios`.
        .executableTarget(
            name: "NetworkBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                "TargetProcess",
                "NetTarget",
            ],
            path: "Benchmarks/NetworkBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        // The store on S3 (RGW of ../scripts/ceph.sh) against the local store in the same run: a
        // 1 GiB mixed target's full base and 1% delta into each, a restart of the delta from a
        // fresh cache, and the bytes the delta uploads against the LZ4 size of the pages it
        // changed (a plain executable, run by `run-ratios --s3-only`, which starts the cluster;
        // needs DirtyTarget, chpox-inject and chpox-restore-stub).
        .executableTarget(
            name: "S3Bench",
            dependencies: [
                .product(name: "Incremental", package: "chpox"),
                .product(name: "Store", package: "chpox"),
                .product(name: "S3Store", package: "chpox"),
                .product(name: "ObjectStore", package: "chpox"),
                "TargetProcess",
                "TargetMemory",
                "DirtyTarget",
            ],
            path: "Benchmarks/S3Bench"
        ),
    ]
)
