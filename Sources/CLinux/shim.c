// CLinux has only header-inline wrappers so far; this file gives the target a translation unit.
#include "CLinux.h"
