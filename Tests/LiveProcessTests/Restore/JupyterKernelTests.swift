import Foundation
import Syscall
import TestTools
import Testing
import TrackerTestSupport

extension LiveProcess {
    /// A Jupyter kernel (ipykernel from PyPI, in the virtual environment `scripts/setup.sh
    /// --tests` makes) driven by a jupyter_client outside its tree: cells build state (a dict,
    /// a numpy array, a helper process the kernel talks to through pipes), the kernel is
    /// checkpointed (a full generation, then `cpx --kill --tcp-established`: its ZeroMQ
    /// connections to the client are held), a cell is sent while it is gone, and after
    /// `ld-chpox` the same client gets that cell's result and runs more cells that read the
    /// earlier state. The kernel keeps IPython's history in SQLite (its own IPYTHONDIR) and
    /// captures its own fd 1 through a pipe it made, which comes back as its own. The kernel, its
    /// client, cpx and ld-chpox run in a network namespace of the test's own (`TestNetwork`), so
    /// that its holds are in that namespace's table, apart from the host's and other runs'.
    @Suite struct JupyterKernelTests {
        /// The environment's python: .build/jupyter-venv at the package's root.
        static let python =
            URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent(
                ".build/jupyter-venv/bin/python"
            )
            .path

        static var canRun: Bool {
            FileManager.default.isExecutableFile(atPath: python)
                && FileManager.default.isExecutableFile(atPath: "/usr/sbin/nft") && TestNetwork.canMake
                && (try? TestTools.run(python, ["-c", "import ipykernel, jupyter_client"]).status) == 0
        }

        /// Waits for the kernel's connection file, then for each line on stdin (a cell as a JSON
        /// string) prints what the cell printed and its result on one line.
        static let client = """
            import json, os, sys, time
            from jupyter_client import BlockingKernelClient
            path = sys.argv[1]
            for _ in range(600):
                try:
                    with open(path) as f: json.load(f)
                    break
                except (OSError, ValueError): time.sleep(0.1)
            kc = BlockingKernelClient(connection_file=path)
            kc.load_connection_file()
            kc.start_channels()
            kc.wait_for_ready(timeout=60)
            print("ready", flush=True)
            seen = []  # the messages of the cell running, for a cell that times out
            def run(code):
                msg_id = kc.execute(code)
                out = []
                seen.clear()
                while True:
                    msg = kc.get_iopub_msg(timeout=60)
                    if msg["parent_header"].get("msg_id") != msg_id: continue
                    kind, content = msg["msg_type"], msg["content"]
                    seen.append(content.get("execution_state", kind))
                    if kind == "stream": out.append(content["text"])
                    elif kind == "execute_result": out.append(content["data"]["text/plain"])
                    elif kind == "error": out.append("error %s: %s" % (content["ename"], content["evalue"]))
                    elif kind == "status" and content["execution_state"] == "idle": break
                while kc.get_shell_msg(timeout=60)["parent_header"].get("msg_id") != msg_id: pass
                return " | ".join("".join(out).strip().splitlines())
            for line in sys.stdin:
                try: print(run(json.loads(line)), flush=True)
                except Exception as e: print("client error", type(e).__name__, e, "after", seen, flush=True)
            """

        /// Sends `code` as one cell; returns its output line.
        static func cell(_ client: WorkloadProcess, _ code: String) throws -> String {
            try client.send(try Self.json(code))
        }

        static func json(_ code: String) throws -> String {
            String(
                decoding: try JSONSerialization.data(withJSONObject: code, options: .fragmentsAllowed), as: UTF8.self)
        }

        @Test(
            .enabled(
                if: canRun,
                "needs .build/jupyter-venv (scripts/setup.sh --tests), nft (nftables), unshare, nsenter, ip and root"),
            .timeLimit(.minutes(3)))
        func aKernelRunsCellsOnItsEarlierStateAfterKillAndRestart() throws {
            let directory = try RestartTests.scratch("jupyter")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = directory + "/store", connection = directory + "/kernel.json", log = directory + "/kernel.log"
            let options = ["--store", store, "--name", "kernel", "--tcp-established"]
            // ipykernel writes the connection file (ports it picked on 127.0.0.1); IPython's
            // history goes to the test's own IPYTHONDIR.
            let network = try TestNetwork()
            let runner = try network.spawn(
                "chpox-subreaper",
                [
                    log, "/usr/bin/env", "IPYTHONDIR=\(directory)/ipython", Self.python, "-m", "ipykernel_launcher",
                    "-f", connection, "--ip=127.0.0.1",
                ])
            let pid = try #require(Int32(try runner.line()))
            var kernelOwner = runner  // the subreaper the kernel runs under: the first, then the restart's
            defer {
                kill(pid, SIGKILL)
                _ = try? kernelOwner.child.wait()
            }
            let client = try network.spawn(Self.python, ["-c", Self.client, connection])
            defer { RestartTests.end(client) }
            try #require(try client.line() == "ready", "the kernel's log: \(RealProgramTests.text(log))")

            // State: a dict, a numpy array (when numpy is there), a helper process with pipes.
            let squares = (0..<1000).reduce(0) { $0 + $1 * $1 }
            #expect(
                try Self.cell(
                    client,
                    "import os, subprocess, sys\nstate = {'k%d' % i: i * i for i in range(1000)}\nsum(state.values())"
                ) == "\(squares)")
            let numpy = try Self.cell(
                client, "try:\n    import numpy as np\n    print('numpy')\nexcept ImportError:\n    print('none')")
            let base = 3 * (0..<100_000).reduce(0, +)
            let build =
                numpy == "numpy"
                ? "arr = np.arange(100000, dtype=np.int64).reshape(1000, 100) * 3\nint(arr.sum())"
                : "arr = [[3 * (100 * r + c) for c in range(100)] for r in range(1000)]\nsum(map(sum, arr))"
            #expect(try Self.cell(client, build) == "\(base)")
            let helper = """
                helper = subprocess.Popen([sys.executable, '-c', 'import sys\\nfor l in sys.stdin: print(l.strip()[::-1], flush=True)'], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                def ask(word):
                    helper.stdin.write(word + '\\n'); helper.stdin.flush()
                    return helper.stdout.readline().strip()
                ask('kernel'), os.getpid()
                """
            #expect(try Self.cell(client, helper) == "('lenrek', \(pid))")
            let threads = try Self.cell(client, "import threading\nthreading.active_count()")

            let full = try network.run("cpx", options + ["\(pid)"])
            #expect(full.status == 0, "\(full.errors)")
            #expect(full.output.contains("generation 0 (full"), "\(full.output)")
            let touch = numpy == "numpy" ? "arr[7] += 11" : "arr[7] = [x + 11 for x in arr[7]]"
            #expect(try Self.cell(client, "state['after'] = len(state)\n\(touch)\nstate['after']") == "1000")

            let last = try network.run("cpx", options + ["--kill", "\(pid)"])
            #expect(last.status == 0, "\(last.errors)")
            #expect(last.output.contains("generation 1 (delta"), "\(last.output)")
            #expect(last.output.contains("held for the restart: the connection"), "\(last.output)")
            #expect(try runner.child.wait() == .exited(128 + SIGKILL), "the kernel's tree is gone")
            // Sent while the kernel is gone: its packets are held, and the restarted kernel runs it.
            try client.write(try Self.json("state['during'] = int(sum(arr[7][:3]))\nstate['during']"))
            Thread.sleep(forTimeInterval: 0.5)
            kernelOwner = try network.spawn(
                "chpox-subreaper",
                [directory + "/restart.log", TestTools.path("ld-chpox")]
                    + TestTools.restartArguments(["--store", store, "--name", "kernel", "--wait"]))
            _ = try kernelOwner.line()  // ld-chpox's pid
            let row7 = (0..<3).reduce(0) { $0 + 3 * (700 + $1) + 11 }
            #expect(
                try client.line() == "\(row7)",
                "ld-chpox: \(RealProgramTests.text(directory + "/restart.log")) kernel: \(RealProgramTests.text(log))")

            #expect(
                try Self.cell(client, "len(state), state['k999'], state['after'], os.getpid()")
                    == "(1002, 998001, 1000, \(pid))")
            let restartLog = RealProgramTests.text(directory + "/restart.log")
            #expect(restartLog.contains("released the hold of"), "the restart released no hold: \(restartLog)")
            let sum = numpy == "numpy" ? "int(arr.sum()), arr.dtype.name, arr.shape" : "sum(map(sum, arr))"
            let sumShown = numpy == "numpy" ? "(\(base + 1100), 'int64', (1000, 100))" : "\(base + 1100)"
            #expect(try Self.cell(client, sum) == sumShown)
            #expect(try Self.cell(client, "ask('restarted'), helper.poll()") == "('detratser', None)")
            #expect(try Self.cell(client, "threading.active_count()") == threads)
            // fd 1 is the kernel's own pipe, read by its watcher thread, which copies it to the
            // log (its original stdout).
            let written = try Self.cell(client, "n = os.write(1, b'fd 1 after the restart\\n')")
            #expect(!written.hasPrefix("client error"), "\(written)")
            let deadline = Date().addingTimeInterval(10)
            while !RealProgramTests.text(log).contains("fd 1 after the restart") && Date() < deadline { usleep(50_000) }
            #expect(RealProgramTests.text(log).contains("fd 1 after the restart"), "\(RealProgramTests.text(log))")
            // The history: every cell so far in In, and in the SQLite file the history thread writes.
            let history =
                "hm = get_ipython().history_manager\nhm.writeout_cache()\nlen(In) - 1, len(list(hm.get_range()))"
            // (The watcher's copy of fd 1 may come as a stream of this cell: its result is last.)
            let counts = try Self.cell(client, history)
            #expect(counts.hasSuffix("(13, 13)"), "\(counts)")
        }
    }
}
