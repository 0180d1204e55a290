# Sourced by the scripts that test a live `tessera serve` from outside (test-openapi.sh,
# test-verifiers.sh): a pinned Python venv, a scratch directory removed on exit, a free
# port, and starting and stopping the debug binary. Expects to run from the repository root.

BIN=target/debug/tessera

# python_venv VENV REQUIREMENTS: creates the venv if missing and installs the pinned packages.
python_venv() {
    if [ ! -x "$1/bin/python" ]; then
        python3 -m venv "$1"
    fi
    "$1/bin/pip" install --quiet --disable-pip-version-check -r "$2"
}

# The scratch directory: the database, the server's output. The server still running at exit
# (a failed step) is stopped with it.
work=$(mktemp -d)
server=""
cleanup() {
    if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# A free port, so that the issuer (and with it the discovery document's URLs) can name it
# before the server starts.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_tessera WHAT: runs `tessera serve` with the TESSERA_* settings assigned before the call
# (`TESSERA_X=1 start_tessera what`: bash passes them to the function's commands), its
# output in $work, and waits for its ready line; exits the script, with its stderr, if it
# does not start. WHAT names the server in that message.
start_tessera() {
    "$BIN" serve >"$work/stdout" 2>"$work/stderr" &
    server=$!
    for _ in $(seq 1 300); do
        grep -q '^listening on' "$work/stdout" 2>/dev/null && break
        kill -0 "$server" 2>/dev/null || break
        sleep 0.1
    done
    if ! grep -q '^listening on' "$work/stdout"; then
        echo "FAIL: tessera did not start ($1)" >&2
        cat "$work/stderr" >&2
        exit 1
    fi
}

# stop_tessera WHAT: SIGTERM, and fails (status 1, with a message) unless it exits cleanly.
stop_tessera() {
    kill "$server"
    local status=0
    wait "$server" || { echo "FAIL: tessera ($1) did not exit cleanly" >&2; status=1; }
    server=""
    return "$status"
}
