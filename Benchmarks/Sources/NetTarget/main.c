// NetTarget: the processes of the network benchmark, one role per invocation. Each reads its
// commands from stdin (end of file, or the death of its parent, ends it) and answers on stdout,
// one line each; it keeps stdin, stdout and stderr and closes every other descriptor it
// inherits as it starts.
//
//   NetTarget netns           a network namespace of its own (unshare CLONE_NEWNET) with its
//                             loopback up; prints "ready" and holds the namespace until it
//                             ends (the benchmark enters it through /proc/PID/ns/net)
//   NetTarget server N        listens on 127.0.0.1, a port the kernel picks; prints
//                             "listening PORT", accepts N connections, prints "ready N" and
//                             holds them, idle
//   NetTarget client PORT N   opens N connections to 127.0.0.1:PORT; prints "ready N" once
//                             every one is established, and holds them, idle
//
// The server is what is checkpointed (its connections' peers, the client, outside its tree);
// both raise their descriptor limit to fit N.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static void fail(const char *what) {
    perror(what);
    exit(1);
}

static void fitDescriptors(long connections) {
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) != 0) fail("getrlimit");
    rlim_t wanted = (rlim_t)connections + 64;
    if (limit.rlim_cur >= wanted) return;
    if (limit.rlim_max < wanted) {
        fprintf(stderr, "NetTarget: %ld connections need %lu descriptors; the hard limit is %lu\n", connections,
                (unsigned long)wanted, (unsigned long)limit.rlim_max);
        exit(1);
    }
    limit.rlim_cur = wanted;
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0) fail("setrlimit");
}

static struct sockaddr_in loopback(int port) {
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return address;
}

// Until end of file on stdin.
static void waitForEnd(void) {
    char buffer[64];
    for (;;) {
        ssize_t n = read(0, buffer, sizeof buffer);
        if (n == 0 || (n < 0 && errno != EINTR)) return;
    }
}

static int netns(void) {
    if (unshare(CLONE_NEWNET) != 0) fail("unshare(CLONE_NEWNET)");
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0) fail("socket");
    struct ifreq request = {0};
    strcpy(request.ifr_name, "lo");
    if (ioctl(s, SIOCGIFFLAGS, &request) != 0) fail("SIOCGIFFLAGS lo");
    request.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &request) != 0) fail("SIOCSIFFLAGS lo");
    close(s);
    printf("ready\n");
    waitForEnd();
    return 0;
}

static int server(long connections) {
    fitDescriptors(connections);
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    if (listener < 0) fail("socket");
    struct sockaddr_in address = loopback(0);
    if (bind(listener, (struct sockaddr *)&address, sizeof address) != 0) fail("bind");
    if (listen(listener, connections < 128 ? 128 : (int)connections) != 0) fail("listen");
    socklen_t length = sizeof address;
    if (getsockname(listener, (struct sockaddr *)&address, &length) != 0) fail("getsockname");
    printf("listening %d\n", ntohs(address.sin_port));
    for (long k = 0; k < connections; k++) {
        if (accept(listener, NULL, NULL) < 0) {
            if (errno == EINTR) k--;
            else fail("accept");
        }
    }
    printf("ready %ld\n", connections);
    waitForEnd();
    return 0;
}

static int client(int port, long connections) {
    fitDescriptors(connections);
    struct sockaddr_in address = loopback(port);
    for (long k = 0; k < connections; k++) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0) fail("socket");
        if (connect(s, (struct sockaddr *)&address, sizeof address) != 0) fail("connect");
    }
    printf("ready %ld\n", connections);
    waitForEnd();
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    syscall(SYS_close_range, 3, ~0U, 0);
    if (argc == 2 && strcmp(argv[1], "netns") == 0) return netns();
    if (argc == 3 && strcmp(argv[1], "server") == 0) return server(atol(argv[2]));
    if (argc == 4 && strcmp(argv[1], "client") == 0) return client(atoi(argv[2]), atol(argv[3]));
    fprintf(stderr, "usage: NetTarget netns | server N | client PORT N\n");
    return 64;
}
