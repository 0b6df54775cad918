#!/usr/bin/env bash
# Checks the shell completion scripts in completions/:
#   - the bash function offers the right words for a few command lines;
#   - the zsh and fish scripts parse (skipped when the shell is not installed);
#   - `zctl completion bash|zsh|fish` prints the files byte for byte.
#
# Usage: tests/integration/test_completions.sh [PATH_TO_BUILT_ZCTL]
# Without the binary the byte-for-byte checks are skipped.

set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
COMPLETIONS=$ROOT/completions
ZCTL=${1-}

passed=0
failed=0

pass() {
    passed=$((passed + 1))
    echo "ok   - $1"
}

fail() {
    failed=$((failed + 1))
    echo "FAIL - $1" >&2
}

skip() {
    echo "skip - $1"
}

# ---------------------------------------------------------------- bash

# shellcheck source=../../completions/zctl.bash
if ! source "$COMPLETIONS/zctl.bash"; then
    fail "sourcing completions/zctl.bash"
fi

# The function registered for zctl, from `complete -p zctl`.
completion_function=$(complete -p zctl 2>/dev/null | sed -n 's/.*-F \([^ ]*\) .*/\1/p')
if [[ -n $completion_function ]] && declare -F "$completion_function" >/dev/null; then
    pass "completions/zctl.bash registers a completion function for zctl ($completion_function)"
else
    fail "completions/zctl.bash registers no completion function for zctl (complete -p zctl: $(complete -p zctl 2>&1))"
    completion_function=
fi

# complete WORD... : runs the completion function as bash would for the
# command line WORD... with the cursor on the last word; the offered words
# end up in COMPREPLY.
complete_line() {
    COMP_WORDS=("$@")
    COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
    COMP_LINE="$*"
    COMP_POINT=${#COMP_LINE}
    COMPREPLY=()
    [[ -n $completion_function ]] && "$completion_function" zctl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
}

# expect_offers "DESCRIPTION" "EXPECTED WORDS" WORD... : the completion of the
# command line WORD... offers every one of EXPECTED WORDS.
expect_offers() {
    local description=$1 expected=$2
    shift 2
    complete_line "$@"
    local word missing=()
    for word in $expected; do
        local found=0 offered
        for offered in "${COMPREPLY[@]}"; do
            [[ $offered == "$word" ]] && found=1 && break
        done
        ((found)) || missing+=("$word")
    done
    if ((${#missing[@]} == 0)); then
        pass "bash: $description offers $expected"
    else
        fail "bash: $description does not offer: ${missing[*]} (offered: ${COMPREPLY[*]:-nothing})"
    fi
}

expect_offers "'zctl <TAB>'" "serve watch probe cluster plugins sink config completion version" zctl ""
expect_offers "'zctl probe --mode <TAB>'" "idle tls hello partial bad-magic bad-version oversize garbage join" zctl probe --mode ""
expect_offers "'zctl serve --<TAB>'" "--mesh --join-token-file" zctl serve --
expect_offers "'zctl watch -<TAB>'" "--namespace --since" zctl watch -
expect_offers "'zctl watch --log<TAB>' (global options after the command)" "--log-level --log-format" zctl watch --log
expect_offers "'zctl serve --log-level <TAB>'" "debug info" zctl serve --log-level ""
expect_offers "'zctl watch -o <TAB>'" "table json" zctl watch -o ""
expect_offers "'zctl plugins <TAB>'" "list info" zctl plugins ""
expect_offers "'zctl config <TAB>'" "check" zctl config ""
expect_offers "'zctl sink <TAB>'" "test" zctl sink ""
expect_offers "'zctl sink test audit --<TAB>'" "--config --count --timeout --output --id --data-dir" zctl sink test audit --
expect_offers "'zctl sink test audit --timeout <TAB>'" "1s 30s" zctl sink test audit --timeout ""
expect_offers "'zctl sink test -c zctl.yaml audit -o <TAB>' (after -c FILE and NAME)" "table json" zctl sink test -c zctl.yaml audit -o ""
expect_offers "'zctl cluster <TAB>'" "list add remove transfer-leadership" zctl cluster ""
expect_offers "'zctl cluster list --<TAB>'" "--node --token-file --output --help" zctl cluster list --
expect_offers "'zctl cluster remove ctrl3 --<TAB>'" "--node --token-file --output" zctl cluster remove ctrl3 --
expect_offers "'zctl cluster transfer-leadership --node URL -o <TAB>'" "table json" zctl cluster transfer-leadership --node http://127.0.0.1:6280 -o ""

# expect_nothing "DESCRIPTION" WORD... : the completion of WORD... offers nothing.
expect_nothing() {
    local description=$1
    shift
    complete_line "$@"
    if ((${#COMPREPLY[@]} == 0)); then
        pass "bash: $description offers nothing"
    else
        fail "bash: $description offers ${COMPREPLY[*]}, expected nothing"
    fi
}

# NAME is free-form: neither subcommands nor options before it is typed.
expect_nothing "'zctl sink test <TAB>'" zctl sink test ""
expect_nothing "'zctl sink test --count 5 <TAB>'" zctl sink test --count 5 ""
expect_nothing "'zctl cluster add <TAB>'" zctl cluster add ""
expect_nothing "'zctl cluster remove --node URL <TAB>'" zctl cluster remove --node http://127.0.0.1:6280 ""
expect_offers "'zctl completion <TAB>'" "bash zsh fish" zctl completion ""
expect_offers "'zctl --log-format <TAB>'" "text json" zctl --log-format ""
expect_offers "'zctl watch --namespace <TAB>'" "cluster connection node sink" zctl watch --namespace ""

# ---------------------------------------------------------------- zsh, fish

if command -v zsh >/dev/null 2>&1; then
    if output=$(zsh -n "$COMPLETIONS/_zctl" 2>&1); then
        pass "zsh -n completions/_zctl"
    else
        fail "zsh -n completions/_zctl: $output"
    fi
else
    skip "zsh is not installed; completions/_zctl not checked"
fi

if command -v fish >/dev/null 2>&1; then
    if output=$(fish -n "$COMPLETIONS/zctl.fish" 2>&1); then
        pass "fish -n completions/zctl.fish"
    else
        fail "fish -n completions/zctl.fish: $output"
    fi
else
    skip "fish is not installed; completions/zctl.fish not checked"
fi

# ---------------------------------------------------------------- zctl completion

if [[ -z $ZCTL ]]; then
    skip "no zctl binary given; 'zctl completion bash|zsh|fish' not compared with completions/"
elif [[ ! -x $ZCTL ]]; then
    fail "zctl binary '$ZCTL' does not exist or is not executable"
else
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    for pair in bash:zctl.bash zsh:_zctl fish:zctl.fish; do
        shell=${pair%%:*}
        file=${pair#*:}
        if ! "$ZCTL" completion "$shell" >"$tmp/$file" 2>"$tmp/stderr"; then
            fail "'zctl completion $shell' failed: $(cat "$tmp/stderr")"
        elif cmp -s "$tmp/$file" "$COMPLETIONS/$file"; then
            pass "'zctl completion $shell' is byte-identical to completions/$file"
        else
            fail "'zctl completion $shell' differs from completions/$file (rebuild zctl?): $(cmp "$tmp/$file" "$COMPLETIONS/$file" 2>&1)"
        fi
    done
fi

echo "$passed passed, $failed failed"
((failed == 0))
