// CLinux: fixed-argument wrappers for the variadic functions and function-like macros that
// Swift cannot call, and kernel uapi definitions newer than the installed headers.
// Every symbol is prefixed chpox_; each wrapper says why it exists.
#ifndef CHPOX_CLINUX_H
#define CHPOX_CLINUX_H

#include <fcntl.h>
#include <sys/types.h>
#include <sys/stat.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <unistd.h>

// openat(2) is variadic (the mode argument is optional): Swift cannot call it directly.
static inline int chpox_openat(int dirfd, const char *path, int flags, unsigned int mode) {
    return openat(dirfd, path, flags, (mode_t)mode);
}

// fcntl(2) is variadic; this is the integer-argument form (F_GETFL, F_SETFD, ...).
static inline int chpox_fcntl_int(int fd, int command, int argument) {
    return fcntl(fd, command, argument);
}

// S_ISDIR/S_ISREG/S_ISLNK are function-like macros.
static inline int chpox_s_isdir(unsigned int mode) { return S_ISDIR(mode); }
static inline int chpox_s_isreg(unsigned int mode) { return S_ISREG(mode); }
static inline int chpox_s_islnk(unsigned int mode) { return S_ISLNK(mode); }

#endif
