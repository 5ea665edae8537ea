// The raw LZ4 block API, for the baseline the Store's compressed writes are measured against.
#include <lz4.h>
