// Debian's libxxhash-dev: XXH3-128 chunk ids, XXH3-64 file checksums.
#include <xxhash.h>
