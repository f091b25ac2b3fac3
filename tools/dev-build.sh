#!/usr/bin/env bash
# Developer loop without pip: compile the shepherd into src/netrunner/_bin
# (git-ignored) exactly as the package build does (setup.py's
# compile_shepherd), so that `PYTHONPATH=src python -m pytest` uses the
# tree as is.  With --asan, also build build/asan/netrunner-shepherd
# (ASan + UBSan; sanitizers need the dynamic link).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c 'import sys; from pathlib import Path; sys.path.insert(0, "."); import setup; setup.compile_shepherd(Path("src/netrunner/_bin/netrunner-shepherd"))'
if [ "${1:-}" = "--asan" ]; then
    WARN="-Wall -Wextra -Werror -Wshadow -Wformat=2 -Wconversion -Wno-sign-conversion"
    mkdir -p build/asan
    ${CC:-cc} -std=c11 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
        -fno-sanitize-recover=undefined $WARN -o build/asan/netrunner-shepherd shepherd/shepherd.c
fi
