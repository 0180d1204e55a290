#!/usr/bin/env bash
# The Dockerfile's runtime stage, built and run with podman without pulling anything: the
# build stage's script assembles the root filesystem from the local build (PROFILE=dev by
# default: the debug binary, stripped), the runtime stage of the Dockerfile is built on it as
# it is written there (only its `COPY --from=build` reads the local directory instead), and
# the container is started on a fresh volume and probed: /healthz from outside, the
# HEALTHCHECK's own command inside, the user it runs as, the SQLite file on the volume, a sign-in.
#
# Needs a static busybox (Debian: busybox-static) and podman; without podman only the build
# stage runs, and the script says so. PODMAN_RUN_FLAGS adds flags to `podman run`; unset, a
# sandbox that refuses podman's rlimits or cgroups gets runc and lower rlimits when runc is
# installed ("--runtime runc --ulimit nofile=1024:1024 --ulimit nproc=1000:1000").
set -euo pipefail
cd "$(dirname "$0")/.."

work="$(mktemp -d "${TMPDIR:-/tmp}/tessera-container.XXXXXX")"
tag="localhost/tessera-smoke:$$"
name="tessera-smoke-$$"
cleanup() {
    podman rm -f "$name" >/dev/null 2>&1 || true
    podman rmi -f "$tag" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
if ! command -v busybox >/dev/null 2>&1; then
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends busybox-static
fi
# podman (and runc for sandboxes that refuse its default runtime) from Debian; a machine where
# they cannot be installed still checks the build stage below, and says the rest was not tested.
if ! command -v podman >/dev/null 2>&1; then
    { $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q podman runc; } ||
        echo "WARNING: podman could not be installed from Debian" >&2
fi
PROFILE="${PROFILE:-dev}" scripts/docker-build-stage.sh "$work/rootfs"

if ! command -v podman >/dev/null 2>&1; then
    echo "container not tested: podman is not installed (Debian: apt-get install podman runc)"
    exit 0
fi

echo "== the Dockerfile's runtime stage, on that root filesystem"
sed -n '/^FROM scratch AS runtime/,$p' Dockerfile |
    sed 's#^COPY --from=build /rootfs/ /#COPY rootfs/ /#' >"$work/Containerfile"
grep -q '^COPY rootfs/ /' "$work/Containerfile" || { echo "FAIL: no runtime stage found in Dockerfile" >&2; exit 1; }
# Docker's image format: OCI images have no HEALTHCHECK.
podman build --quiet --format docker -t "$tag" -f "$work/Containerfile" "$work" >/dev/null

echo "== run it on a fresh volume"
mkdir -p "$work/volume"
chown 10001:10001 "$work/volume" 2>/dev/null || chmod 0777 "$work/volume"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
# (Without systemd podman says it cannot schedule the health checks: `healthcheck run` below
# runs one by hand.)
start() {
    podman rm -f "$name" >/dev/null 2>&1 || true
    # shellcheck disable=SC2086 # a list of flags
    podman run -d --name "$name" $1 -p "127.0.0.1:$port:8080" -v "$work/volume:/data" \
        "$tag" >/dev/null 2>"$work/run.err"
}
sandbox="--runtime runc --ulimit nofile=1024:1024 --ulimit nproc=1000:1000"
if [ -n "${PODMAN_RUN_FLAGS+set}" ]; then
    start "$PODMAN_RUN_FLAGS" || { cat "$work/run.err" >&2; exit 1; }
elif ! start ""; then
    if grep -qE 'rlimit|cgroup' "$work/run.err" && command -v runc >/dev/null 2>&1; then
        echo "podman run was refused ($(grep -oE '(setrlimit|cgroups)[^:]*' "$work/run.err" | head -n 1)); again with: $sandbox"
        start "$sandbox" || { cat "$work/run.err" >&2; exit 1; }
    else
        cat "$work/run.err" >&2
        exit 1
    fi
fi
base="http://127.0.0.1:$port"
for _ in $(seq 1 60); do
    curl -fsS "$base/healthz" >/dev/null 2>&1 && break
    sleep 0.5
done
if ! curl -fsS "$base/healthz"; then
    podman logs "$name" >&2 || true
    echo "FAIL: /healthz did not answer" >&2
    exit 1
fi
echo

echo "== the HEALTHCHECK's command, inside"
podman image inspect --format '{{json .HealthCheck.Test}}' "$tag"
podman healthcheck run "$name" && echo "podman healthcheck run: healthy" || {
    echo "FAIL: the HEALTHCHECK failed" >&2
    exit 1
}

echo "== non-root, data on the volume"
user="$(podman exec "$name" /bin/busybox id -u)"
[ "$user" = 10001 ] || { echo "FAIL: runs as uid $user" >&2; exit 1; }
[ -f "$work/volume/tessera.db" ] || { echo "FAIL: no tessera.db on the volume" >&2; exit 1; }
echo "uid $user; $(ls "$work/volume" | tr '\n' ' ')"

echo "== sign a user in"
post() { curl -fsS -H 'content-type: application/json' -d "$2" "$base$1"; }
post /v1/auth/register '{"email":"container@example.com","password":"a long enough password"}' >/dev/null
post /v1/auth/login '{"email":"container@example.com","password":"a long enough password"}' |
    python3 -c 'import json, sys; t = json.load(sys.stdin); assert t["access_token"] and t["refresh_token"]; print("login: ok")'

echo "container: ok"
