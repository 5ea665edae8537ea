// chpox-restore-stub --guard: the guardian of a lazy restart (guard.c).
#ifndef CHPOX_RESTORE_STUB_GUARD_H
#define CHPOX_RESTORE_STUB_GUARD_H
// Serves the control socket on stdin until told the page server is done, or kills what it
// watches when the socket closes first; never returns.
int run_page_guard(void);
#endif
