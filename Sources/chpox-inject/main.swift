// chpox-inject userfaultfd PID
// chpox-inject state PID
//
// Runs system calls inside process PID for the checkpointer. Runs as its own short-lived
// process, in its own session, so that the checkpointer (cpx) can be killed at any instant
// without leaving the target in the middle of an injected system call: this helper always
// finishes, putting back every register and byte it borrowed.
//
// userfaultfd: creates a userfaultfd inside PID for the uffd-wp tracker; prints "fd N" (N: the
// descriptor number inside PID) or "error TEXT"; then waits for one line on stdin (the tracker
// has taken the descriptor with pidfd_getfd) or end of file (the tracker died), closes N inside
// PID in either case, detaches and exits.
//
// state: prints what only the process can say (InjectedState's lines: program break, each
// thread's tid address, every non-default signal action), then "end"; or "error TEXT".
import Tracee

#if canImport(Glibc)
import Glibc
#endif

let arguments = CommandLine.arguments
guard arguments.count == 3, ["userfaultfd", "state"].contains(arguments[1]), let pid = Int32(arguments[2]) else {
    print("error usage: chpox-inject userfaultfd|state PID")
    exit(2)
}
// The checkpointer's death must not take this process with it.
signal(SIGPIPE, SIG_IGN)
signal(SIGHUP, SIG_IGN)
signal(SIGINT, SIG_IGN)
signal(SIGTERM, SIG_IGN)

do {
    let process = try FrozenProcess(pid: pid)
    switch arguments[1] {
    case "userfaultfd":
        let calls = RemoteCalls(process)
        let fd = try calls.userfaultfd()
        print("fd \(fd)")
        fflush(nil)
        var byte: UInt8 = 0
        _ = read(0, &byte, 1)  // a line or end of file: either way the descriptor goes
        try calls.close(fd)
    default:
        let state = try InjectedState(reading: process)
        process.thaw()
        for line in state.lines { print(line) }
        print("end")
    }
    process.thaw()
} catch {
    print("error \(error)")
    exit(1)
}
