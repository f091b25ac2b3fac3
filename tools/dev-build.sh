#!/usr/bin/env bash
# Developer loop without pip: compile the shepherd into src/netrunner/_bin
# (git-ignored) so that `PYTHONPATH=src python -m pytest` uses the tree as is.
# With --asan, also build build/asan/netrunner-shepherd (ASan + UBSan).
set -euo pipefail
cd "$(dirname "$0")/.."
WARN="-Wall -Wextra -Werror -Wshadow -Wformat=2 -Wconversion -Wno-sign-conversion"
mkdir -p src/netrunner/_bin
${CC:-cc} -std=c11 -O2 $WARN -o src/netrunner/_bin/netrunner-shepherd shepherd/shepherd.c
if [ "${1:-}" = "--asan" ]; then
    mkdir -p build/asan
    ${CC:-cc} -std=c11 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
        -fno-sanitize-recover=undefined $WARN -o build/asan/netrunner-shepherd shepherd/shepherd.c
fi
