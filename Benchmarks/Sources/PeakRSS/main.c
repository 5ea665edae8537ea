// PeakRSS PROGRAM [ARGUMENTS...]: runs PROGRAM as its child and writes, as the last line of
// stderr, "peak-rss-kib N": the child's peak resident memory (wait4's ru_maxrss, KiB); exits as
// the child did (128 + the signal when one killed it).
//
// Why a helper: a program started with posix_spawn by a large process (a benchmark holding
// gigabytes) reports that process's peak as its own. glibc's posix_spawn clones with CLONE_VM
// (vfork), and exec records the high-water mark of the memory it leaves, the parent's, in the
// new program's ru_maxrss (fs/exec.c, setmax_mm_hiwater_rss). Forked from this small process,
// the program starts from this process's few hundred KiB.
#define _GNU_SOURCE
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <errno.h>

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: PeakRSS PROGRAM [ARGUMENTS...]\n");
        return 2;
    }
    pid_t child = fork();
    if (child < 0) {
        perror("PeakRSS: fork");
        return 2;
    }
    if (child == 0) {
        execv(argv[1], argv + 1);
        perror("PeakRSS: exec");
        _exit(127);
    }
    int status = 0;
    struct rusage usage = {0};
    while (wait4(child, &status, 0, &usage) < 0) {
        if (errno != EINTR) {
            perror("PeakRSS: wait4");
            return 2;
        }
    }
    fprintf(stderr, "peak-rss-kib %ld\n", usage.ru_maxrss);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
