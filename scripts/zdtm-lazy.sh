#!/usr/bin/env bash
# zdtm tests restarted with ld-chpox --lazy (scripts/zdtm.sh --lazy), for scripts/test.sh.
exec bash "$(dirname "$0")/zdtm.sh" --lazy
