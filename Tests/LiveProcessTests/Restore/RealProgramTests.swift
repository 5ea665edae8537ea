import Foundation
import TestTools
import TrackerTestSupport
import Testing

extension LiveProcess {
    /// Real programs nobody here wrote, each a tree of processes: run once uninterrupted for
    /// the reference; run again, checkpointed mid-run by `cpx` (a full generation, then an
    /// incremental one by the dirty trackers), the whole tree killed, restarted by `ld-chpox`
    /// from the incremental generation, and its output files then byte for byte the
    /// reference's.
    ///
    /// Every run is `chpox-subreaper`'s child (Tests/Subreaper): the tree in a session of its
    /// own, stdin /dev/null, stdout and stderr a log, and its orphans reaped there, so that the
    /// subreaper's exit means every pid of the tree is free (a tree restarts with its pids) or,
    /// for the restart, that every process of the tree has finished (`ld-chpox --wait` waits
    /// for the first one only).
    @Suite struct RealProgramTests {
        /// One program, run in a directory of its own (the reference's and the checkpointed
        /// run's differ; the outputs do not name it).
        struct Program: Sendable {
            var name: String
            /// Writes the program's files (scripts, sources) into the directory.
            var prepare: @Sendable (String) throws -> Void
            /// Its command line, run in the directory.
            var command: @Sendable (String) -> [String]
            /// How far a run has got, read from its directory (lines written, objects built).
            var progress: @Sendable (String) -> Int
            /// The progress at which the first generation is taken: well before the end.
            var checkpointAt: Int
            /// Its output files, relative to the directory.
            var outputs: [String]
        }

        /// True when each of `programs` is on PATH.
        static func installed(_ programs: String...) -> Bool {
            let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
            return programs.allSatisfy { program in
                path.split(separator: ":").contains { FileManager.default.isExecutableFile(atPath: "\($0)/\(program)") }
            }
        }

        static func lines(_ path: String) -> Int {
            ((try? Data(contentsOf: URL(fileURLWithPath: path))) ?? Data()).reduce(0) { $0 + ($1 == 10 ? 1 : 0) }
        }

        static func text(_ path: String) -> String {
            (try? String(contentsOfFile: path, encoding: .utf8)) ?? "(unreadable: \(path))"
        }

        /// Runs `program` under a subreaper; returns the subreaper, which has printed the pid
        /// of the program's first process.
        static func start(_ program: Program, in directory: String) throws -> (runner: WorkloadProcess, pid: Int32) {
            let runner = try WorkloadProcess(
                executable: TestTools.path("chpox-subreaper"),
                arguments: [directory + "/log"] + program.command(directory))
            let pid = try #require(Int32(try runner.line()))
            return (runner, pid)
        }

        /// The proof: reference run, checkpointed run killed, restart, same outputs.
        static func prove(_ program: Program) throws {
            let directory = try RestartTests.scratch("real-\(program.name)")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let reference = directory + "/reference", run = directory + "/run", store = directory + "/store"
            for place in [reference, run] {
                try FileManager.default.createDirectory(atPath: place, withIntermediateDirectories: true)
                try program.prepare(place)
            }

            let uninterrupted = try TestTools.run(
                "chpox-subreaper", [reference + "/log"] + program.command(reference))
            try #require(uninterrupted.status == 0, "the reference run failed: \(text(reference + "/log"))")

            let (runner, pid) = try start(program, in: run)
            let deadline = Date().addingTimeInterval(60)
            while program.progress(run) < program.checkpointAt && Date() < deadline { usleep(10_000) }
            try #require(program.progress(run) >= program.checkpointAt, "no progress: \(text(run + "/log"))")
            // One cpx run: a full generation now, an incremental one (its trackers) 0.5 s later.
            let checkpoint = try TestTools.run(
                "cpx", ["--store", store, "--name", program.name, "--interval", "0.5", "--count", "2", "\(pid)"])
            #expect(checkpoint.status == 0, "\(checkpoint.errors)")
            #expect(checkpoint.output.contains("generation 0 (full"), "\(checkpoint.output)")
            #expect(checkpoint.output.contains("generation 1 (delta"), "\(checkpoint.output)")
            // Its whole tree is its process group; it must still be running.
            try #require(
                kill(-pid, SIGKILL) == 0, "\(program.name) finished before its generations were taken: slow it down")
            // The subreaper exits once it has reaped the whole tree: every pid of it is free.
            #expect(try runner.child.wait() == .exited(128 + SIGKILL))
            try #require(checkpoint.status == 0)

            let restart = try TestTools.run(
                "chpox-subreaper",
                [directory + "/restart.log", TestTools.path("ld-chpox")]
                    + TestTools.restartArguments(["--store", store, "--name", program.name, "--wait"]))
            #expect(
                restart.status == 0,
                "ld-chpox: \(text(directory + "/restart.log"))\n\(program.name)'s log: \(text(run + "/log"))")
            for output in program.outputs {
                let expected = try Data(contentsOf: URL(fileURLWithPath: reference + "/" + output))
                let got = (try? Data(contentsOf: URL(fileURLWithPath: run + "/" + output))) ?? Data()
                let shown =
                    "got:\n\(text(run + "/" + output).suffix(600))\n"
                    + "reference:\n\(text(reference + "/" + output).suffix(600))"
                #expect(got == expected, "\(output): \(got.count) bytes, the reference's \(expected.count)\n\(shown)")
            }
        }

        /// `Pool(2).imap` over a deterministic CPU-bound function, each result printed in
        /// order to a file: the parent (with the pool's handler threads) and two forked workers.
        static let pool = Program(
            name: "pool",
            prepare: { directory in
                try """
                import multiprocessing

                def work(n):
                    h = n
                    for i in range(150_000):
                        h = (h * 1103515245 + 12345 + i) % 2147483648
                    return n, h

                if __name__ == "__main__":
                    with open("results", "w") as out, multiprocessing.Pool(2) as pool:
                        for n, h in pool.imap(work, range(300)):
                            print(n, h, file=out, flush=True)
                        print("done", file=out, flush=True)
                """.write(toFile: directory + "/pool.py", atomically: true, encoding: .utf8)
            },
            command: { ["/bin/sh", "-c", "cd \($0) && exec /usr/bin/python3 pool.py"] },
            progress: { lines($0 + "/results") },
            checkpointAt: 15,
            outputs: ["results"])

        @Test(
            .enabled(if: installed("python3"), "python3 is not installed"),
            .timeLimit(.minutes(2)))
        func aPythonMultiprocessingPoolFinishesWithTheSameResults() throws {
            try Self.prove(Self.pool)
        }

        /// A shell pipeline of seven programs: the first (seq) has written everything and
        /// exited by the first generation, its bytes still queued for the loop that reads
        /// them; the loop waits 10 ms a line (a read that times out on an idle FIFO: a sleep
        /// forked per line would change the tree faster than `cpx` can stop it whole); sort and
        /// md5sum write only at the end.
        static let pipeline = Program(
            name: "pipeline",
            prepare: { directory in
                try """
                cd "$1"
                mkfifo idle && exec 9<>idle && rm idle
                seq 1 400 | while read i; do echo $((i * i % 1009)); read -t 0.01 -u 9; done | tee progress \\
                    | awk '{ s = (s * 31 + $1) % 1000003; print NR ":" s }' | sed 's/^/line /' | sort -t: -k2 -n \\
                    | gzip -n | md5sum > result

                """.write(toFile: directory + "/pipeline.sh", atomically: true, encoding: .utf8)
            },
            command: { ["/bin/bash", $0 + "/pipeline.sh", $0] },
            progress: { lines($0 + "/progress") },
            checkpointAt: 80,
            outputs: ["progress", "result"])

        @Test(
            .enabled(
                if: installed("bash", "seq", "tee", "awk", "sed", "sort", "gzip", "md5sum", "sleep"),
                "bash or one of seq, tee, awk, sed, sort, gzip, md5sum, sleep is not installed"),
            .timeLimit(.minutes(2)))
        func aBashPipelineFinishesWithTheSameOutput() throws {
            try Self.prove(Self.pipeline)
        }

        /// `make -j2` of eleven C files, each recipe slowed by a sleep and each compile long
        /// enough (-O2 of 40 functions) that generations find compilers running; the output
        /// is the built program's and a checksum of every object and of the program.
        static let build = Program(
            name: "make",
            prepare: { directory in
                let parts = 1...10
                for part in parts {
                    var source = ""
                    for k in 0..<4 {
                        source += "static unsigned long f\(k)(unsigned long x) {\n"
                        source += "    for (int i = 0; i < \(100 + k + part); i++) "
                        source += "x = x * 6364136223846793005UL + \(k) + (x >> \(k % 31 + 1));\n"
                        source += "    return x;\n}\n"
                    }
                    source += "unsigned long part\(part)(unsigned long x) {\n"
                    source += (0..<4).map { "    x = f\($0)(x);\n" }.joined() + "    return x;\n}\n"
                    try source.write(toFile: directory + "/part\(part).c", atomically: true, encoding: .utf8)
                }
                var main = "#include <stdio.h>\n" + parts.map { "unsigned long part\($0)(unsigned long);\n" }.joined()
                main += "int main(void) {\n    unsigned long x = 1;\n"
                main += parts.map { "    x = part\($0)(x);\n    printf(\"part\($0) %lu\\n\", x);\n" }.joined()
                main += "    return 0;\n}\n"
                try main.write(toFile: directory + "/main.c", atomically: true, encoding: .utf8)
                try """
                OBJECTS = $(patsubst %.c,%.o,$(sort $(wildcard *.c)))
                program: $(OBJECTS)
                \tsleep 1; $(CC) -o $@ $(OBJECTS)
                %.o: %.c
                \tsleep 1; $(CC) -O1 -c -o $@ $<

                """.write(toFile: directory + "/Makefile", atomically: true, encoding: .utf8)
            },
            command: {
                ["/bin/sh", "-c", "cd \($0) && make -j2 && ./program > result && sha256sum *.o program >> result"]
            },
            progress: { directory in
                ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasSuffix(".o") }
                    .count
            },
            checkpointAt: 2,
            outputs: ["result"])

        @Test(
            .enabled(if: installed("make", "cc", "sh", "sleep", "sha256sum"), "make, cc or sha256sum is not installed"),
            .timeLimit(.minutes(2)))
        func makeFinishesItsParallelBuildWithTheSameProducts() throws {
            try Self.prove(Self.build)
        }
    }
}
