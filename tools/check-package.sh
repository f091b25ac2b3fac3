#!/usr/bin/env bash
# The package as a new user gets it: build the sdist and ONE wheel, check
# the wheel's tag with auditwheel, install that same wheel into a fresh venv
# of every Python given (netrunner -- echo hello, and a run() from Python),
# make sure an editable install finds its shepherd, and unpack the sdist
# into $SDIST_DIR (when set) so the caller can run its own test suite there.
#   tools/check-package.sh PYTHON [PYTHON...]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$#" -ge 1 ] || { echo "usage: $0 PYTHON [PYTHON...]" >&2; exit 2; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

first="$1"
"$first" -m venv "$work/build-env"
"$work/build-env/bin/python" -m pip install -q build auditwheel
"$work/build-env/bin/python" -m build -q --sdist --wheel -o "$work/dist" . >/dev/null 2>&1
wheel="$(ls "$work"/dist/*.whl)"
sdist="$(ls "$work"/dist/*.tar.gz)"
echo "built $(basename "$sdist") and $(basename "$wheel")"
case "$(basename "$wheel")" in
    *-py3-none-*) ;;
    *) echo "the wheel is not tagged py3-none-<platform>" >&2; exit 1 ;;
esac
"$work/build-env/bin/auditwheel" show "$wheel" | grep -i "consistent with" || true

for python in "$@"; do
    venv="$work/venv-$(basename "$(dirname "$(dirname "$python")")")-$RANDOM"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q "$wheel"
    (cd "$work" && "$venv/bin/netrunner" -- echo hello >/dev/null)
    (cd "$work" && "$venv/bin/python" -c 'import netrunner; assert netrunner.run(["echo", "ok"]).stdout == b"ok\n"')
    echo "wheel on $("$venv/bin/python" -c 'import sys; print(sys.version.split()[0])'): ok"
done

# Editable: the shepherd is compiled into the source tree it runs from.
tree="$work/editable"
mkdir -p "$tree"
tar xzf "$sdist" -C "$tree" --strip-components=1
"$first" -m venv "$work/venv-editable"
"$work/venv-editable/bin/python" -m pip install -q -e "$tree"
(cd "$work" && "$work/venv-editable/bin/python" -c 'import netrunner; assert netrunner.run(["true"]).returncode == 0')
echo "editable install: ok"

tar tzf "$sdist" >"$work/sdist-files"
for needed in LICENSE tests/conftest.py tests/procs.py tests/helpers/ tests/stress/fuzz/fuzz_request.c tools/gen_protocol_h.py tools/gen_protocol_docs.py shepherd/shepherd.c; do
    grep -q "^[^/]*/$needed" "$work/sdist-files" || { echo "the sdist lacks $needed" >&2; exit 1; }
done
echo "sdist contents: ok"
if [ -n "${SDIST_DIR:-}" ]; then
    mkdir -p "$SDIST_DIR"
    tar xzf "$sdist" -C "$SDIST_DIR" --strip-components=1
fi
