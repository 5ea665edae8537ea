// Debian's liblz4-dev: LZ4 block compression for pack frames.
#include <lz4.h>
