// Exported constants for macros Swift cannot evaluate, and wrappers of functions glibc
// declares only under _GNU_SOURCE.
#define _GNU_SOURCE
#include <spawn.h>
#include "CLinux.h"

// posix_spawn_file_actions_addclosefrom_np (glibc 2.34+): a child gets only the descriptors
// it is given, never ones its parent leaked without O_CLOEXEC.
int chpox_posix_spawn_closefrom(posix_spawn_file_actions_t *actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np(actions, from);
}

// _IOWR('f', 16, struct pm_scan_arg), include/uapi/linux/fs.h (6.7+).
const unsigned long chpox_PAGEMAP_SCAN = _IOWR('f', 16, struct chpox_pm_scan_arg);
_Static_assert(_IOWR('f', 16, struct chpox_pm_scan_arg) == 0xC0606610UL, "PAGEMAP_SCAN request number");
const unsigned long chpox_UFFDIO_API = UFFDIO_API;
const unsigned long chpox_UFFDIO_REGISTER = UFFDIO_REGISTER;
const unsigned long chpox_UFFDIO_UNREGISTER = UFFDIO_UNREGISTER;
const unsigned long chpox_UFFDIO_WRITEPROTECT = UFFDIO_WRITEPROTECT;
