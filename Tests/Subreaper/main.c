// chpox-subreaper LOG COMMAND [ARGUMENT...]
//
// Runs COMMAND as the one child of a child subreaper (PR_SET_CHILD_SUBREAPER), in a session
// and process group of its own, its stdin /dev/null and its stdout and stderr the file LOG
// (created or emptied); prints the child's pid on a line, then reaps every process of the tree
// until none is left, and exits with COMMAND's status (128 + N when signal N ended it).
//
// Why: the real-program tests kill a whole tree (kill(-pid): its group) and restart it with
// the same pids, which must be free first. Orphans of a killed tree go to the nearest
// subreaper, else to pid 1, which may reap them late; here they come to this process, so its
// exit means every pid of the tree is free. The restarted tree runs under one too (ld-chpox
// --wait waits for the tree's first process only), so its exit means the whole tree finished.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: chpox-subreaper LOG COMMAND [ARGUMENT...]\n");
        return 64;
    }
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) {
        perror("chpox-subreaper: prctl(PR_SET_CHILD_SUBREAPER)");
        return 1;
    }
    pid_t child = fork();
    if (child < 0) {
        perror("chpox-subreaper: fork");
        return 1;
    }
    if (child == 0) {
        int null = open("/dev/null", O_RDONLY);
        int log = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (null < 0 || log < 0 || setsid() < 0 || dup2(null, 0) < 0 || dup2(log, 1) < 0 || dup2(log, 2) < 0) {
            perror("chpox-subreaper: the child's session and stdio");
            _exit(127);
        }
        close(null);
        close(log);
        execvp(argv[2], argv + 2);
        perror("chpox-subreaper: exec");
        _exit(127);
    }
    printf("%d\n", (int)child);
    fflush(stdout);
    int result = 0;
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, 0);
        if (pid < 0) {
            if (errno == EINTR) continue;
            break;  // ECHILD: nothing of the tree is left
        }
        if (pid == child) result = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    return result;
}
