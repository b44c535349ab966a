#!/usr/bin/env bash
# The project rule "no function longer than 80 lines", checked: prints every function of
# the given C files (default: cnode/ genserver/ supervisor/) with its length, longest
# first, and exits 1 when one is longer than the limit and not allowed below.
#
#   scripts/funclen.sh                    every function, longest first
#   scripts/funclen.sh -n 10 genserver/*.c   the ten longest of these files
#   FUNCLEN_MAX=60 scripts/funclen.sh     another limit
#
# A function runs from the first line of its signature to the '}' in column 0 that
# closes the '{' in column 0 after it, as the project's style lays functions out.
# Allowed past the limit: a dispatch switch whose cases are one call each (list it in
# ALLOWED with the reason).
set -euo pipefail
cd "$(dirname "$0")/.."

max=${FUNCLEN_MAX:-80}
top=0
if [ "${1:-}" = -n ]; then
    top=$2
    shift 2
fi
# file:function pairs allowed past the limit.
ALLOWED=()

files=("$@")
if [ ${#files[@]} -eq 0 ]; then
    mapfile -t files < <(ls cnode/*.c genserver/*.c supervisor/*.c)
fi

list=$(awk '
    FNR == 1 { sig = ""; start = 0; in_fn = 0 }
    # A signature line: an identifier in column 0 with an opening parenthesis.
    !in_fn && /^[A-Za-z_][A-Za-z0-9_ \*]*[ \*]?[A-Za-z_][A-Za-z0-9_]*\(/ {
        sig = $0; start = FNR
    }
    !in_fn && /^\{/ && start {
        in_fn = 1
        name = sig
        sub(/\(.*/, "", name)
        n = split(name, parts, /[ \*]+/)
        name = parts[n]
        next
    }
    in_fn && /^\}/ {
        printf "%d %s:%s\n", FNR - start + 1, FILENAME, name
        in_fn = 0; start = 0; sig = ""
    }
' "${files[@]}" | sort -rn)

if [ "$top" -gt 0 ]; then
    echo "$list" | head -n "$top"
else
    echo "$list"
fi

bad=0
while read -r len where; do
    [ -n "${len:-}" ] || continue
    [ "$len" -gt "$max" ] || continue
    allowed=0
    for a in "${ALLOWED[@]+"${ALLOWED[@]}"}"; do
        [ "$a" = "$where" ] && allowed=1
    done
    if [ $allowed = 0 ]; then
        echo "funclen: $where is $len lines, longer than $max" >&2
        bad=1
    fi
done <<< "$list"
exit $bad
