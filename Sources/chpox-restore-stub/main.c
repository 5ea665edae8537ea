// chpox-restore-stub: the process ld-chpox turns into a restarted one.
//
// It only waits. ld-chpox stops it with ptrace, unmaps everything it has, maps the saved
// process's memory in its place and gives it the saved registers: nothing of this program
// survives. It is started with GLIBC_TUNABLES=glibc.pthread.rseq=0, so that it registers no
// rseq area of its own (the saved process's is registered instead).
//
// Until the restart hands the process over, it must not outlive ld-chpox (it would hold the
// saved pid forever): it asks for SIGKILL when its parent dies (PR_SET_PDEATHSIG; the restart
// clears it as its last call), and exits at once if that parent, named by ld-chpox in
// CHPOX_RESTORE_PARENT, is already gone.
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <unistd.h>

int main(void) {
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) return 1;
    const char *parent = getenv("CHPOX_RESTORE_PARENT");
    if (parent != NULL && getppid() != (pid_t)atol(parent)) return 1;
    for (;;) pause();
}
