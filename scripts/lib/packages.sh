#!/usr/bin/env bash
# Sourced by scripts/test.sh and scripts/demo.sh.

# ensure_packages CMD:PKG...
# Installs the Debian package for each command that is missing. apt-get is
# only touched when something is missing, so a prepared machine runs offline
# and a developer's laptop is never modified behind their back.
ensure_packages() {
    local missing=() pair cmd pkg
    for pair in "$@"; do
        cmd=${pair%%:*}
        pkg=${pair#*:}
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if ((${#missing[@]} == 0)); then
        echo "all present"
        return 0
    fi
    echo "installing: ${missing[*]}"
    if [[ $(id -u) -ne 0 ]]; then
        echo "not root: install ${missing[*]} yourself (apt-get install ${missing[*]})" >&2
        return 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    # dpkg's progress output is long and useless when things go well; show it
    # only when they do not.
    local log
    log=$(mktemp)
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        echo "could not install ${missing[*]}" >&2
        return 1
    fi
    rm -f "$log"
    echo "installed: ${missing[*]}"
}
