// chpox-inject userfaultfd PID
//
// Creates a userfaultfd inside process PID for the uffd-wp tracker. Runs as its own short-lived
// process, in its own session, so that the tracker (cpx) can be killed at any instant without
// leaving the target in the middle of an injected system call: this helper always finishes.
//
// Protocol: prints "fd N" (N: the descriptor number inside PID) or "error TEXT"; then waits
// for one line on stdin (the tracker has taken the descriptor with pidfd_getfd) or end of
// file (the tracker died), closes N inside PID in either case, detaches and exits.
import Tracee

#if canImport(Glibc)
import Glibc
#endif

let arguments = CommandLine.arguments
guard arguments.count == 3, arguments[1] == "userfaultfd", let pid = Int32(arguments[2]) else {
    print("error usage: chpox-inject userfaultfd PID")
    exit(2)
}
// The tracker's death must not take this process with it.
signal(SIGPIPE, SIG_IGN)
signal(SIGHUP, SIG_IGN)
signal(SIGINT, SIG_IGN)
signal(SIGTERM, SIG_IGN)

do {
    let process = try FrozenProcess(pid: pid)
    let fd = try process.remoteUserfaultfd()
    print("fd \(fd)")
    fflush(nil)
    var byte: UInt8 = 0
    _ = read(0, &byte, 1)  // a line or end of file: either way the descriptor goes
    try process.remoteClose(fd)
    process.thaw()
} catch {
    print("error \(error)")
    exit(1)
}
