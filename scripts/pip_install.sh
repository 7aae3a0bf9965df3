#!/usr/bin/env bash
# pip install into a virtualenv, saying what it installs and how far along it is: one line first
# (how many packages, from which file, the usual time), one line per package as pip reaches it
# ("[12/66] fastapi==0.165.0"), one when pip unpacks them, and the time it took. pip -q prints
# nothing for the 45 s of a first install; plain pip prints four lines per package.
#
# Usage: scripts/pip_install.sh VENV "what, ~time" PIP_INSTALL_ARGS...
#   e.g. scripts/pip_install.sh .venv "first run, ~45 s" -r requirements.lock
# pip's errors (stderr) pass through untouched; its exit status is this script's.
set -euo pipefail

venv="$1"
note="$2"
shift 2

# Packages to expect: the pinned lines of every -r FILE, plus the other requirement arguments.
total=0
what=()
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[i]}" in
        -r | --requirement)
            file="${args[i + 1]}"
            total=$((total + $(grep -cE '^[A-Za-z0-9]' "$file")))
            what+=("$file")
            i=$((i + 1))
            ;;
        -e | --editable)
            total=$((total + 1))
            what+=("${args[i + 1]} (editable)")
            i=$((i + 1))
            ;;
        -*) ;;
        *)
            total=$((total + 1))
            what+=("${args[i]}")
            ;;
    esac
done

installed() { find "$venv"/lib/python3*/site-packages -maxdepth 1 -name '*.dist-info' -newer "$marker" 2>/dev/null | wc -l; }

# pip unpacks the wheels one by one after "Installing collected packages" (tens of seconds for a
# first install: xllamacpp alone is 100 MB) and prints nothing meanwhile: every 5 s, how many
# are in place (the marker file gets the count when that phase starts; a dist-info newer than the
# file is a package in place).
marker="$(mktemp)"
monitor() {
    while sleep 5; do
        [[ -s "$marker" ]] || continue
        printf '  ... %d of %s installed\n' "$(installed)" "$(cat "$marker")"
    done
}
monitor &
monitor_pid=$!
trap 'kill "$monitor_pid" 2>/dev/null || true; rm -f "$marker"' EXIT

printf 'make: installing %d pinned package(s) from %s into %s (%s)...\n' "$total" "${what[*]}" "$venv" "$note"
start=$SECONDS
"$venv/bin/pip" --disable-pip-version-check install --progress-bar off "$@" | awk -v total="$total" -v marker="$marker" '
    /^(Collecting |Requirement already satisfied: |Obtaining |Processing )/ {
        seen++
        name = ($1 == "Requirement") ? $4 : $2
        if ($1 == "Processing" && match(name, /[^\/]+\.whl$/)) {  # a local wheel: its name-version
            split(substr(name, RSTART), part, "-")
            name = part[1] "==" part[2]
        }
        if ($1 == "Requirement") already++
        printf "  [%d/%d] %s%s\n", seen, total, name, ($1 == "Requirement") ? " (already there)" : ""
        fflush()
        next
    }
    /^Installing collected packages:/ {
        n = split($0, parts, ",")
        printf "  unpacking and installing %d package(s)...\n", n
        fflush()
        printf "%d", n > marker
        close(marker)
        next
    }
    /^Successfully installed/ { next }
    /^(  |Looking in|Ignoring|Using cached|Downloading|Building|Preparing|Getting|Installing build|Checking|Created wheel|Stored in|Attempting|Found existing|Uninstalling|Successfully uninstalled)/ { next }
    { print; fflush() }
'
printf 'make: installed into %s in %ds\n' "$venv" $((SECONDS - start))
