#!/usr/bin/env bash
# Formats every man page in man/ with groff and fails on any warning or error.
#
# Usage: tests/integration/test_man_pages.sh

set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

if ! command -v groff >/dev/null 2>&1; then
    echo "FAIL - groff is not installed (Debian: apt-get install groff-base)" >&2
    echo "0 passed, 1 failed"
    exit 1
fi

# -mandoc picks -man or -mdoc per page; fall back to -man where it is missing.
macros=-mandoc
groff -mandoc -z </dev/null >/dev/null 2>&1 || macros=-man

passed=0
failed=0
shopt -s nullglob
pages=("$ROOT"/man/*.[157])
if ((${#pages[@]} == 0)); then
    echo "FAIL - no man pages found in $ROOT/man" >&2
    echo "0 passed, 1 failed"
    exit 1
fi

for page in "${pages[@]}"; do
    name=man/${page##*/}
    # -ww: all warnings; -z: format, discard the output. Anything on stderr
    # is a problem in the page.
    messages=$(groff "$macros" -ww -z "$page" 2>&1 >/dev/null)
    status=$?
    if ((status == 0)) && [[ -z $messages ]]; then
        passed=$((passed + 1))
        echo "ok   - $name"
    else
        failed=$((failed + 1))
        echo "FAIL - $name (groff exit status $status):" >&2
        printf '%s\n' "$messages" | sed 's/^/       /' >&2
    fi
done

echo "$passed passed, $failed failed"
((failed == 0))
