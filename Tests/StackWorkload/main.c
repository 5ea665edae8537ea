// chpox-stack-workload: a process with a known call stack and known values, for the
// debugger tests of `ld-chpox --core`. It computes a value, descends three frames and waits
// there in read(2) on stdin; "q" or end of file ends it.
//
// gdb on a core of it must show outer -> middle -> inner_wait in the backtrace, and print
// chpox_marker (4242), the local `depth_value` of middle (3 * 7) and `counter` (the number
// of lines read so far).
#include <stdio.h>
#include <string.h>
#include <unistd.h>

volatile long chpox_marker = 4242;
volatile long counter = 0;

__attribute__((noinline)) static int inner_wait(int depth) {
    char line[64];
    for (;;) {
        printf("waiting %d %ld\n", depth, counter);
        fflush(stdout);
        ssize_t n = read(0, line, sizeof line);
        if (n <= 0 || line[0] == 'q') return depth;
        counter++;
    }
}

__attribute__((noinline)) static int middle(int depth) {
    volatile int depth_value = depth * 7;
    return inner_wait(depth_value) + depth_value;
}

__attribute__((noinline)) static int outer(void) { return middle(3); }

int main(void) {
    return outer() == 42 ? 0 : 1;
}
