#!/usr/bin/env bash
# How Tessera instances scale on one PostgreSQL database: 1, 2, then 3 instances of the
# release binary on one database, each loaded by a load generator of its own, the 32 clients
# split between them. Per step and scenario (verify, refresh): the total rate, the rate per
# instance, the p99 of the slowest generator, and the CPU per request of the instances and of
# PostgreSQL (from /proc), so the step's ratio can be read against the machine's cores.
#
#   scripts/instances.sh            (docs/SCALING.md, "Instances on one database")
#
#   SHARED_BENCH  the reference bench folder (default ../shared/bench beside the checkout)
#   DATABASE_URL  the PostgreSQL server (default postgres://postgres@127.0.0.1:5432/test);
#                 the database `tessera_instances` is dropped and made anew
#   SECS, WARMUP, CONC, MAX_INSTANCES   (8, 2, 32, 3)
# Only 127.0.0.1 is ever targeted; every load loop is bounded by SECS.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bench="${SHARED_BENCH:-$root/../shared/bench}"
admin="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
SECS="${SECS:-8}" WARMUP="${WARMUP:-2}" CONC="${CONC:-32}" MAX_INSTANCES="${MAX_INSTANCES:-3}"
tessera="$root/target/release/tessera"
loadgen="$bench/loadgen/target/release/loadgen"
out="$(mktemp -d)"
(cd "$root" && cargo build --release --quiet -p tessera)
[ -x "$loadgen" ] || (cd "$bench/loadgen" && cargo build --release --quiet)

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$out"
}
trap cleanup EXIT

# CPU ticks (user + system) of a process and its threads; of PostgreSQL: every backend.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
pg_ticks() {
  local sum=0 p
  for p in $(pgrep -f 'postgres' || true); do
    [ -r "/proc/$p/stat" ] && sum=$((sum + $(ticks "$p" 2>/dev/null || echo 0)))
  done
  echo "$sum"
}
hz="$(getconf CLK_TCK)"

echo "instances scenario total_rps per_instance_rps ratio_to_one p99_ms_worst tessera_cpu_us_per_req postgres_cpu_us_per_req errors"
declare -A one
for n in $(seq 1 "$MAX_INSTANCES"); do
  psql "$admin" -qc "DROP DATABASE IF EXISTS tessera_instances WITH (FORCE)" -c "CREATE DATABASE tessera_instances" 2>/dev/null
  db="${admin%/*}/tessera_instances?sslmode=disable"
  pids=()
  for i in $(seq 1 "$n"); do
    TESSERA_LOGIN_RATE=0 TESSERA_REFRESH_RATE=0 TESSERA_LISTEN="127.0.0.1:$((8180 + i))" \
      TESSERA_DATABASE_URL="$db" "$tessera" serve >"$out/tessera-$i.log" 2>&1 &
    pids+=("$!")
    # One at a time: the first migrates the database.
    for _ in $(seq 1 100); do grep -q '^listening on' "$out/tessera-$i.log" && break; sleep 0.1; done
  done
  for scenario in verify refresh; do
    gens=()
    for i in $(seq 1 "$n"); do
      "$loadgen" --target tessera --base "http://127.0.0.1:$((8180 + i))" --scenario "$scenario" \
        --concurrency $((CONC / n)) --duration "$SECS" --warmup "$WARMUP" --json \
        >"$out/$scenario-$i.json" 2>/dev/null &
      gens+=("$!")
    done
    # The measured window: after set-up (logins) and warm-up, for SECS - 2 seconds.
    sleep $((WARMUP + 2))
    t0=0; for p in "${pids[@]}"; do t0=$((t0 + $(ticks "$p"))); done; g0="$(pg_ticks)"
    sleep $((SECS - 2))
    t1=0; for p in "${pids[@]}"; do t1=$((t1 + $(ticks "$p"))); done; g1="$(pg_ticks)"
    for g in "${gens[@]}"; do wait "$g"; done
    python3 - "$n" "$scenario" "$((t1 - t0))" "$((g1 - g0))" "$hz" "$((SECS - 2))" "${one[$scenario]:-0}" "$out/$scenario"-*.json <<'PY' | tee "$out/line"
import json, sys
n, scenario, tt, pt, hz, window, one = sys.argv[1:8]
runs = [json.loads(open(f).read().strip().splitlines()[-1]) for f in sys.argv[8:]]
rps = sum(r["rps"] for r in runs)
per = rps / int(n)
ratio = per / float(one) if float(one) > 0 else 1.0
p99 = max(r["latency_ms"]["p99"] for r in runs)
errors = sum(r["errors_total"] for r in runs)
cpu = lambda ticks: int(ticks) / int(hz) / (rps * int(window)) * 1e6
kinds = {k: v for r in runs for k, v in r.get("errors", {}).items()}
print(f"{n} {scenario} {rps:.0f} {per:.0f} {ratio:.2f} {p99} {cpu(tt):.1f} {cpu(pt):.1f} {errors}" + (f" {kinds}" if kinds else ""))
PY
    [ "$n" = 1 ] && one[$scenario]="$(awk '{ print $4 }' "$out/line")"
  done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait "${pids[@]}" 2>/dev/null || true
done
psql "$admin" -qc "DROP DATABASE IF EXISTS tessera_instances WITH (FORCE)" 2>/dev/null || true
