// chpox-restore-stub: the process ld-chpox turns into a restarted one.
//
// It only waits. ld-chpox stops it with ptrace, unmaps everything it has, maps the saved
// process's memory in its place and gives it the saved registers: nothing of this program
// survives. It is started with GLIBC_TUNABLES=glibc.pthread.rseq=0, so that it registers no
// rseq area of its own (the saved process's is registered instead).
#include <unistd.h>

int main(void) {
    for (;;) pause();
}
