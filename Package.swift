// swift-tools-version: 6.1
// chpox: userspace incremental checkpoint/restart for Linux. See README.md and DESIGN notes.
import PackageDescription

let package = Package(
    name: "chpox",
    platforms: [.macOS(.v13)],
    products: [
        .library(name: "Store", targets: ["Store"]),
        .library(name: "Tracee", targets: ["Tracee"]),
        .library(name: "SoftDirty", targets: ["SoftDirty"]),
        .library(name: "Incremental", targets: ["Incremental"]),
        .library(name: "Reports", targets: ["Reports"]),
        .library(name: "ObjectStore", targets: ["ObjectStore"]),
        .library(name: "S3Store", targets: ["S3Store"]),
        .executable(name: "cpx", targets: ["cpx"]),
        .executable(name: "ld-chpox", targets: ["ld-chpox"]),
        .executable(name: "dumpinfo", targets: ["dumpinfo"]),
        .executable(name: "chpox-demo", targets: ["chpox-demo"]),
        .executable(name: "chpox-inject", targets: ["chpox-inject"]),
        .executable(name: "chpox-restore-stub", targets: ["chpox-restore-stub"]),
        .executable(name: "chpox-sample", targets: ["chpox-sample"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2")
    ],
    targets: [
        // C libraries from Debian, found with pkg-config.
        .systemLibrary(name: "CLZ4", pkgConfig: "liblz4", providers: [.apt(["liblz4-dev"])]),
        .systemLibrary(name: "CXXHash", pkgConfig: "libxxhash", providers: [.apt(["libxxhash-dev"])]),
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(name: "CCrypto", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        // Fixed-argument wrappers for the variadic and macro APIs Swift cannot call.
        .target(name: "CLinux"),

        // Each syscall wrapped once: file descriptors, directories, locks, memory maps.
        .target(name: "Syscall", dependencies: ["CLinux"]),
        // The content-addressed, deduplicating chunk store.
        .target(name: "Store", dependencies: ["Syscall", "CLZ4", "CXXHash"]),
        // An S3 client (issue 17): SigV4-signed requests over libcurl, for the store on S3.
        .target(name: "ObjectStore", dependencies: ["CCurl", "CCrypto"]),
        // The store on S3: a local store as its cache, kept in step with the bucket (issue 17).
        .target(name: "S3Store", dependencies: ["Store", "ObjectStore", "Syscall", "CXXHash"]),
        // A live process from outside: ptrace freeze, remote syscalls, /proc readers, memory.
        .target(name: "Tracee", dependencies: ["Syscall", "CLinux"]),
        // Dirty-page trackers behind one protocol: soft-dirty, uffd-wp, hash; DirtyRate.
        .target(name: "SoftDirty", dependencies: ["Tracee", "Syscall", "CLinux", "CXXHash"]),
        // The engine: checkpointer and restorer over the trackers and the store.
        .target(name: "Incremental", dependencies: ["Store", "SoftDirty", "Tracee", "Syscall"]),
        // What the commands print: the engine's, the store's and the trackers' results as
        // text for people and JSON for scripts.
        .target(name: "Reports", dependencies: ["Incremental", "Store", "SoftDirty", "Tracee", "Syscall"]),

        // Options and error reporting shared by the three commands.
        .target(
            name: "CommandSupport",
            dependencies: [
                "Incremental", "Store", "S3Store", "Syscall", "Tracee",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        .executableTarget(
            name: "cpx",
            dependencies: ["CommandSupport", "Reports", "Incremental", "Store", "SoftDirty", "Tracee", "Syscall"]),
        // Creates the uffd-wp tracker's userfaultfd inside the target, as its own process.
        .executableTarget(name: "chpox-inject", dependencies: ["Tracee"]),
        // The process ld-chpox turns into a restarted one: it only waits.
        .executableTarget(name: "chpox-restore-stub"),
        .executableTarget(name: "ld-chpox", dependencies: ["CommandSupport", "Reports", "Incremental", "Store"]),
        .executableTarget(name: "dumpinfo", dependencies: ["CommandSupport", "Reports", "Incremental", "Store"]),
        .executableTarget(
            name: "chpox-demo",
            dependencies: ["CommandSupport", "Reports", "Incremental", "Store", "StoreTestSupport", "Syscall"]),
        // The program the live demo checkpoints and restarts.
        .executableTarget(name: "chpox-sample"),

        // Test support: a deterministic synthetic memory workload, shared by the tests,
        // the crash-test writer and the demo.
        .target(name: "StoreTestSupport", dependencies: ["Store", "Syscall"], path: "Tests/StoreTestSupport"),
        // A child process that writes generations until killed (crash-safety tests).
        .executableTarget(
            name: "chpox-store-writer", dependencies: ["Store", "S3Store", "StoreTestSupport"],
            path: "Tests/StoreWriterTool"),
        // The C workload the tracker proofs run: writes, maps, unmaps, mremaps, forks...
        .executableTarget(name: "chpox-dirty-workload", path: "Tests/DirtyWorkload"),
        // The C workload checkpointed live: churns memory, registers, signals and a file, and self-checks.
        .executableTarget(
            name: "chpox-churn-workload", path: "Tests/ChurnWorkload",
            linkerSettings: [.linkedLibrary("pthread"), .linkedLibrary("m")]),
        // A tree of four processes that self-check and answer over pipes (the tree kill tests).
        .executableTarget(
            name: "chpox-tree-workload", path: "Tests/TreeWorkload", linkerSettings: [.linkedLibrary("pthread")]),
        // A process with a known call stack, for the debugger tests of `ld-chpox --core`.
        .executableTarget(
            name: "chpox-stack-workload", path: "Tests/StackWorkload", cSettings: [.unsafeFlags(["-g", "-O0"])]),
        // Runs a command as a subreaper's child and reaps its whole tree (the real-program restarts).
        .executableTarget(name: "chpox-subreaper", path: "Tests/Subreaper"),
        .target(
            name: "TrackerTestSupport", dependencies: ["SoftDirty", "Tracee", "Syscall", "CXXHash"],
            path: "Tests/TrackerTestSupport"),
        // The checkpointer's proof on the churn workload, shared by the tests and the guests.
        .target(
            name: "CheckpointTestSupport",
            dependencies: ["Incremental", "Store", "SoftDirty", "Tracee", "TrackerTestSupport", "Syscall"],
            path: "Tests/CheckpointTestSupport"),
        // The proofs as a standalone program, for kill tests and QEMU guests.
        .executableTarget(
            name: "chpox-tracker-proof",
            dependencies: ["TrackerTestSupport", "CheckpointTestSupport", "SoftDirty", "Tracee"],
            path: "Tests/TrackerProofTool"),
        // Finding and running the package's executables from tests.
        .target(name: "TestTools", path: "Tests/TestTools"),
        // Everything that stops, traces or checkpoints a live process: one serialized suite.
        .testTarget(
            name: "LiveProcessTests",
            dependencies: [
                "TestTools", "Store", "SoftDirty", "Tracee", "Syscall", "Incremental", "TrackerTestSupport",
                "CheckpointTestSupport", "chpox-dirty-workload", "chpox-churn-workload", "chpox-stack-workload",
                "chpox-subreaper", "chpox-tree-workload",
                "chpox-tracker-proof", "chpox-inject", "chpox-restore-stub", "cpx", "dumpinfo", "ld-chpox",
                "S3TestSupport", "ObjectStore",
            ], exclude: ["Restore/Golden"]),
        // Unit tests, one target per module; none runs a live process.
        .testTarget(
            name: "StoreTests",
            dependencies: ["TestTools", "Store", "Syscall", "StoreTestSupport", "chpox-store-writer"]),
        .testTarget(name: "TraceeTests", dependencies: ["Tracee"]),
        // The S3 client against a real Ceph RGW (scripts/ceph.sh), and its signer against AWS's examples.
        .testTarget(name: "ObjectStoreTests", dependencies: ["ObjectStore", "S3TestSupport"]),
        // The one-node Ceph of scripts/ceph.sh for tests, and a proxy that cuts or slows requests.
        .target(name: "S3TestSupport", dependencies: ["ObjectStore"], path: "Tests/S3TestSupport"),
        // The store on S3: commands and library against the real RGW, faults included.
        .testTarget(
            name: "S3StoreTests",
            dependencies: [
                "S3Store", "Store", "ObjectStore", "S3TestSupport", "StoreTestSupport", "Syscall", "TestTools",
                "Incremental",
                "chpox-store-writer",
            ]),
        .testTarget(name: "SoftDirtyTests", dependencies: ["SoftDirty", "Tracee"]),
        // The engine, and the commands over stores it wrote (dumpinfo's golden text in Golden/).
        .testTarget(
            name: "IncrementalTests",
            dependencies: [
                "TestTools", "Store", "Incremental", "SoftDirty", "Tracee", "StoreTestSupport", "cpx", "dumpinfo",
                "ld-chpox",
            ], exclude: ["Golden"]),
    ]
)
