#!/usr/bin/env bash
# The README's run command on each supported Python, from a clean clone of this repository's HEAD:
#
#   python3.X -m venv V && V/bin/pip install -e . && V/bin/mouthpiece demo
#
# then, on that light default install: torch is not installed, and a wav2lip job fails with a message
# naming the neural extra. Prints one line per version with the time and the venv's size; exits 1 if a
# version present here fails. CI runs on one version (.ci/run: 3.11); run this before a release, or after
# changing dependencies:   bench/check_pythons.sh            (3.11 3.12 3.13)
#                          bench/check_pythons.sh 3.13       (one version)
# An interpreter is found as pythonX.Y on PATH, else through pyenv (PYENV_VERSION=X.Y.Z pythonX.Y).
# Needs PyPI (or a mirror); keeps nothing (KEEP=1 keeps the work folders and prints where they are).
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VERSIONS=("$@")
[ ${#VERSIONS[@]} -eq 0 ] && VERSIONS=(3.11 3.12 3.13)

python_for() {  # the command that runs Python $1, or nothing
    if "python$1" -c pass 2>/dev/null; then echo "python$1"; return; fi
    if command -v pyenv >/dev/null 2>&1; then
        local full
        full=$(pyenv versions --bare 2>/dev/null | grep -E "^$1\.[0-9]+$" | sort -V | tail -1)
        [ -n "$full" ] && echo "env PYENV_VERSION=$full python$1"
    fi
}

check() {  # $1 version, $2 python command, $3 work folder; prints what failed, returns non-zero then
    local work=$3
    export MOUTHPIECE_DATA_DIR="$work/data"  # the check keeps its state to itself
    git clone -q "$ROOT" "$work/src" || { echo "git clone failed"; return 1; }
    cd "$work/src" || return 1
    $2 -m venv "$work/venv" >"$work/log" 2>&1 || { echo "venv failed"; return 1; }
    "$work/venv/bin/pip" install -q -e . >>"$work/log" 2>&1 || { echo "pip install -e . failed (see $work/log)"; return 1; }
    "$work/venv/bin/mouthpiece" demo -o "$work/demo.mp4" >>"$work/log" 2>&1 || { echo "demo failed (see $work/log)"; return 1; }
    [ -s "$work/demo.mp4" ] || { echo "demo wrote no video"; return 1; }
    if "$work/venv/bin/python" -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is None)"; then
        echo "torch is in the default install"; return 1
    fi
    local neural
    neural=$("$work/venv/bin/mouthpiece" render pipeline/assets/jfk.flac pipeline/assets/astronaut.png \
        --renderer wav2lip -o "$work/neural.mp4" 2>&1)
    if [ $? -ne 1 ] || ! grep -q "mouthpiece-avatar\[neural\]" <<<"$neural"; then
        echo "a wav2lip job did not fail naming the neural extra: $(tail -3 <<<"$neural")"; return 1
    fi
}

status=0
for version in "${VERSIONS[@]}"; do
    python=$(python_for "$version")
    if [ -z "$python" ]; then
        echo "Python $version: absent here, skipped"
        continue
    fi
    work=$(mktemp -d "${TMPDIR:-/tmp}/mouthpiece-py$version.XXXX")
    started=$(date +%s)
    problem=$( (check "$version" "$python" "$work") )
    seconds=$(( $(date +%s) - started ))
    size=$(du -sh "$work/venv" 2>/dev/null | cut -f1)
    if [ -z "$problem" ]; then
        echo "Python $version: OK  install + demo + neural check in ${seconds}s, default venv ${size:-?} ($($python --version 2>&1))"
    else
        echo "Python $version: FAILED after ${seconds}s: $problem"
        status=1
    fi
    if [ "${KEEP:-0}" = 1 ]; then echo "  kept: $work"; else rm -rf "$work"; fi
done
exit $status
