#!/usr/bin/env bash
# Every figure of docs/BENCHMARKS.md's table for one backend, in one run on this machine:
# Tessera against the reference peers (../shared/bench/compare.sh, A B A B: the Node tutorial
# stack, then better-auth); beside each comparison its bounds: the load generator's ceiling
# against a trivial server, Tessera's own login bound and (PostgreSQL) the database's ceiling
# for a rotation (limit.sh); the argon2 CLI's login limit; memory idle and under load; verify
# latency while logins saturate the CPU; verify rounds each between two rounds of the load
# generator's ceiling; refresh rounds (PostgreSQL: each between two limit.sh rounds); verify on
# fresh servers, the default logging against logging off (judged on each server's CPU time
# per verify); refresh and verify with 10 M sessions in the database against 10 k. Every
# round, the comparisons' too, carries the share of the machine's CPU the host stole over it.
# Then each of issue 19's targets, met or missed (targets.txt).
# Tessera runs in its default configuration (logging at `info` included), rate limits off.
#
#   scripts/benchmark.sh sqlite|postgres
#
#   SHARED_BENCH   the reference bench folder (default ../shared/bench beside the checkout)
#   DATABASE_URL   PostgreSQL server for the peer, limit.sh and (postgres) Tessera's own
#                  databases `tessera_bench_*` (default postgres://postgres@127.0.0.1:5432/test)
#   ROUNDS, SECS, WARMUP, CONC   passed to compare.sh (2, 10, 2, 32)
#   SESSIONS       the large seeded database set against 10,000 sessions (10000000; 0 skips it)
#   OUT            results folder (default target/benchmark-<backend>-<time>)
# Only 127.0.0.1 is ever targeted; every load loop is bounded by SECS.
set -euo pipefail
backend="${1:?usage: scripts/benchmark.sh sqlite|postgres}"
root="$(cd "$(dirname "$0")/.." && pwd)"
bench="${SHARED_BENCH:-$root/../shared/bench}"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
export ROUNDS="${ROUNDS:-2}" SECS="${SECS:-10}" WARMUP="${WARMUP:-2}" CONC="${CONC:-32}"
SESSIONS="${SESSIONS:-10000000}"
out="${OUT:-$root/target/benchmark-$backend-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"
port=8080
tessera="$root/target/release/tessera"
tessera_bench="$root/target/release/tessera-bench"
loadgen="$bench/loadgen/target/release/loadgen"
hello="$bench/loadgen/target/release/hello"

(cd "$root" && cargo build --release --quiet -p tessera -p tessera-bench)
[ -x "$loadgen" ] || (cd "$bench/loadgen" && cargo build --release --quiet)
[ -d "$bench/peer-express/node_modules" ] || "$bench/peer-express/setup.sh" >&2

case "$backend" in
  sqlite | postgres) ;;
  *) echo "backend must be sqlite or postgres" >&2; exit 2 ;;
esac

# A fresh database for the server named $1: a file of its own, or a PostgreSQL database.
fresh_db() {
  case "$backend" in
    sqlite) echo "sqlite://$out/tessera-$1.db" ;;
    postgres)
      psql "$DATABASE_URL" -qc "DROP DATABASE IF EXISTS tessera_bench_$1" -c "CREATE DATABASE tessera_bench_$1" >/dev/null 2>&1
      echo "${DATABASE_URL%/*}/tessera_bench_$1?sslmode=disable"
      ;;
  esac
}
# Starts Tessera named $1 on port $2 and the database $3, in the default configuration with
# rate limits off and the settings after them (VAR=value), and waits until it listens; its pid
# is then in $!.
serve_on() {
  local name="$1" listen="$2" url="$3"
  shift 3
  env -u RUST_LOG TESSERA_LOGIN_RATE=0 TESSERA_REFRESH_RATE=0 TESSERA_LISTEN="127.0.0.1:$listen" \
    TESSERA_DATABASE_URL="$url" "$@" "$tessera" serve >"$out/tessera-$name.log" 2>&1 &
  for _ in $(seq 1 300); do grep -qs '^listening on' "$out/tessera-$name.log" && break; sleep 0.1; done
}
# The same on a fresh database of its own.
serve() {
  local name="$1" listen="$2"
  shift 2
  serve_on "$name" "$listen" "$(fresh_db "$name")" "$@"
}

# The whole machine's CPU time so far (/proc/stat, in ticks): all, idle (with I/O wait), stolen.
cpu_ticks() { awk '$1 == "cpu" { print $2+$3+$4+$5+$6+$7+$8+$9, $5+$6, $9 }' /proc/stat; }
# Once a second for the whole run, so that the comparisons' rounds (compare.sh runs them) get
# the same idle and steal figures as the rounds run here: epoch seconds, then cpu_ticks.
(while sleep 1; do echo "$(date -u +%s) $(cpu_ticks)"; done) >"$out/cpu-ticks.txt" &
ticks_pid=$!
# Lines from stdin, each after the epoch second it arrived in.
stamp() { while IFS= read -r line; do echo "$(date -u +%s) $line"; done; }

serve main "$port"
tessera_pid=$!
hello_pid=""
default_pid=""
quiet_pid=""
seeded_pids=()
cleanup() {
  kill "$ticks_pid" "$tessera_pid" 2>/dev/null || true
  [ -n "$default_pid" ] && kill "$default_pid" 2>/dev/null || true
  [ -n "$quiet_pid" ] && kill "$quiet_pid" 2>/dev/null || true
  [ -n "$hello_pid" ] && kill "$hello_pid" 2>/dev/null || true
  [ "${#seeded_pids[@]}" -gt 0 ] && kill "${seeded_pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT
sleep 2
rss() { awk -v k="$1" '$1 == k":" { print int($2 / 1024) }' "/proc/$tessera_pid/status"; }
echo "rss_idle_mib $(rss VmRSS)" | tee "$out/summary.txt"

# The machine drifts by tens of percent within minutes, so each comparison gets its own
# bounds, measured just before it (verify and login come first) or just after it (refresh):
# - the load generator's own ceiling, against a trivial HTTP server at the same concurrency;
# - Tessera's own login bound: one client logging in at a time, so each login's time is one
#   hash with nothing queued; the cores over its median is the most logins hashing could give;
# - the database's ceiling for a rotation (limit.sh, PostgreSQL).
start_hello() {
  "$hello" --listen 127.0.0.1:9090 --threads 1 >/dev/null 2>&1 &
  hello_pid=$!
  sleep 0.5
}
stop_hello() {
  kill "$hello_pid" 2>/dev/null || true
  wait "$hello_pid" 2>/dev/null || true
  hello_pid=""
}
bounds_before() {
  start_hello
  "$loadgen" --base http://127.0.0.1:9090 --scenario get --concurrency "$CONC" --duration "$SECS" \
    --warmup "$WARMUP" --json | tail -n 1 >"$out/ceiling-$1.json"
  stop_hello
  echo "loadgen_ceiling_$1 $(cat "$out/ceiling-$1.json")" | tee -a "$out/summary.txt"
  "$loadgen" --target tessera --base "http://127.0.0.1:$port" --scenario login --concurrency 1 \
    --duration 5 --warmup 1 --json | tail -n 1 >"$out/login-alone-$1.json"
  login_ms="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["latency_ms"]["p50"])' "$out/login-alone-$1.json")"
  echo "tessera_login_alone_ms_$1 $login_ms login_limit_per_s $(awk -v t="$login_ms" -v n="$(nproc)" 'BEGIN {printf "%.1f", n * 1000 / t}')" | tee -a "$out/summary.txt"
}
limit_after() {
  [ "$backend" = postgres ] || return 0
  "$bench/limit.sh" 2>&1 | tail -n 1 | sed "s/^limit:/limit_after_$1:/" | tee -a "$out/summary.txt"
}

bounds_before express
TESSERA_URL="http://127.0.0.1:$port" RESULTS="$out/compare.jsonl" "$bench/compare.sh" 2>&1 |
  tee "$out/compare.txt" >(stamp >"$out/compare-times.txt")
limit_after express
# The peer a team would pick today, same scenarios (its /token mints an access token for the
# session, without rotating anything; its /protected reads the session from the database).
[ -d "$bench/peer-better-auth/node_modules" ] || "$bench/peer-better-auth/setup.sh" >&2
bounds_before better-auth
PEER=better-auth TESSERA_URL="http://127.0.0.1:$port" RESULTS="$out/compare-better-auth.jsonl" \
  "$bench/compare.sh" 2>&1 | tee "$out/compare-better-auth.txt" >(stamp >"$out/compare-better-auth-times.txt")
limit_after better-auth
echo "rss_peak_mib $(rss VmHWM)" | tee -a "$out/summary.txt"

# The argon2 limit for logins: the cores over one argon2id hash with Tessera's parameters in
# the reference C implementation (Debian's `argon2`), the median of 9 runs.
if command -v argon2 >/dev/null; then
  hash_s="$(for _ in $(seq 1 9); do echo -n pw | argon2 somesaltsomesalt -id -t 2 -k 19456 -p 1 | awk '/seconds/ {print $1}'; done | sort -n | sed -n 5p)"
  echo "argon2_hash_s $hash_s login_limit_per_s $(awk -v t="$hash_s" -v n="$(nproc)" 'BEGIN {printf "%.1f", n / t}')" | tee -a "$out/summary.txt"
else
  echo "argon2_hash_s unknown (apt-get install argon2)" | tee -a "$out/summary.txt"
fi
# Verify while 32 other clients keep the password hasher saturated with logins.
"$tessera_bench" run --url "http://127.0.0.1:$port" --scenario login -c 32 -d $((SECS + WARMUP + 2)) \
  --warmup 0 --json >"$out/login-background.json" 2>/dev/null &
login_pid=$!
sleep 1
"$loadgen" --target tessera --base "http://127.0.0.1:$port" --scenario verify --concurrency "$CONC" \
  --duration "$SECS" --warmup "$WARMUP" --json | tail -n 1 >"$out/verify-under-login.json"
wait "$login_pid" || true
echo "verify_under_login $(cat "$out/verify-under-login.json")" | tee -a "$out/summary.txt"
echo "rss_peak_after_logins_mib $(rss VmHWM)" | tee -a "$out/summary.txt"

# `"cpu_idle":F,"cpu_steal":F`: the shares of the machine's CPU time idle and taken by the host
# between two cpu_ticks readings ($1..$3 before, $4..$6 after). The steal says whether a slow
# round was the machine: the host ran other guests on our cores.
cpu_fields() {
  awk -v a="$1" -v i="$2" -v s="$3" -v A="$4" -v I="$5" -v S="$6" \
    'BEGIN { t = A - a; if (t <= 0) t = 1; printf "\"cpu_idle\":%.3f,\"cpu_steal\":%.3f", (I - i) / t, (S - s) / t }'
}
# One load-generator round (target and scenario from the arguments after the fourth), appended
# to the file $1 as its JSON line tagged with the round $2, the field $3 set to $4, the moment
# it ended (epoch seconds; its measured window is the SECS before) and the machine's idle and
# stolen CPU over the round.
measure() {
  local file="$1" round="$2" key="$3" value="$4" line before
  shift 4
  before="$(cpu_ticks)"
  line="$("$loadgen" "$@" --concurrency "$CONC" --duration "$SECS" --warmup "$WARMUP" --json | tail -n 1)"
  # shellcheck disable=SC2046 # the six tick counts are meant to split
  echo "{\"round\":$round,\"$key\":\"$value\",\"ended\":$EPOCHREALTIME,$(cpu_fields $before $(cpu_ticks)),${line#\{}" >>"$file"
  echo "  $key $value, round $round: $(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["rps"])' "$line") req/s"
}
# One limit.sh round (PostgreSQL's ceiling for a rotation), appended to the file $1 like a
# `measure` round: tagged with the round $2 and `"server":"limit.sh"`, its rate as `rps`.
limit_round() {
  local file="$1" round="$2" before tps
  before="$(cpu_ticks)"
  tps="$("$bench/limit.sh" 2>&1 | tail -n 1 | sed -n 's/.*tps=\([0-9.]*\).*/\1/p')"
  # shellcheck disable=SC2046
  echo "{\"round\":$round,\"server\":\"limit.sh\",$(cpu_fields $before $(cpu_ticks)),\"rps\":${tps:-0}}" >>"$file"
  echo "  server limit.sh, round $round: ${tps:-?} rotations/s"
}

# Verify against the load generator's ceiling at the same moment. The machine's speed moves
# by half within minutes (one run saw hello at 101k, then 155k ten minutes later), so a ceiling
# taken before a comparison can be far from the one its rounds had: here every verify round
# sits between two hello rounds and is set against their mean.
start_hello
bracketed="$out/verify-bracketed.jsonl"
: >"$bracketed"
for round in $(seq 1 $((ROUNDS * 2))); do
  measure "$bracketed" "$round" server hello --base http://127.0.0.1:9090 --scenario get
  measure "$bracketed" "$round" server tessera --target tessera --base "http://127.0.0.1:$port" --scenario verify
done
measure "$bracketed" $((ROUNDS * 2 + 1)) server hello --base http://127.0.0.1:9090 --scenario get
stop_hello

# Refresh against the database's ceiling at the same moment, as verify above: on PostgreSQL
# every refresh round sits between two limit.sh rounds and is set against their mean (a
# limit.sh taken after a comparison can meet another machine: one run saw a refresh round at
# half the one before it, the peer's rounds beside it down by a third, and limit.sh then at
# its usual rate). On SQLite the rounds stand alone, for their p99.
bracketed_refresh="$out/refresh-bracketed.jsonl"
: >"$bracketed_refresh"
for round in $(seq 1 $((ROUNDS * 2))); do
  [ "$backend" = postgres ] && limit_round "$bracketed_refresh" "$round"
  measure "$bracketed_refresh" "$round" server tessera --target tessera --base "http://127.0.0.1:$port" --scenario refresh
done
[ "$backend" = postgres ] && limit_round "$bracketed_refresh" $((ROUNDS * 2 + 1))
echo "rss_peak_end_mib $(rss VmHWM)" | tee -a "$out/summary.txt"

# What the default logging costs: verify against two fresh servers, one in the default
# configuration and one with logging off (RUST_LOG=off), each on a database of its own,
# interleaved A B B A, so that a machine speeding up or slowing down through the rounds
# favours neither. Both fresh, so that they differ in the logging alone: the server above has
# carried every round before (its caches full, its heap and database grown), and set against
# a fresh one it ran up to a sixth slower or faster whatever the logging. Twice as many pairs
# as the comparisons' rounds, each on a new pair of servers started in the order it is
# measured, so that no one pair of processes decides the figure. Even so a run can lean one
# way in every pair (0.92-0.94 in four pairs on one pair of servers; 1.01-1.15 in four new
# pairs in another run), while the two differ by 0.3 % in instructions per verify (callgrind,
# docs/BENCHMARKS.md): what moves it is not the work done per request.
#
# Beside each round's rate, the CPU time the server itself spent per verify (user + system,
# from /proc/<pid>/stat, read ten times a second; benchmark_targets.py takes the measured
# window's share): the cost the logging adds, which time the host stole or the load generator
# took does not enter. It still moves with the rate between two fresh servers (89,925 req/s
# at 9.8 us a verify against 78,895 at 11.0): that swing is inside the server process.
kill "$tessera_pid" 2>/dev/null || true
wait "$tessera_pid" 2>/dev/null || true
echo "clk_tck $(getconf CLK_TCK)" | tee -a "$out/summary.txt"
# The moment and the CPU time in clock ticks of the process $1 so far, ten times a second
# until it ends (builtins only, so that the sampling itself costs next to nothing).
cpu_of() {
  local stat
  while read -r -a stat 2>/dev/null <"/proc/$1/stat"; do
    echo "$EPOCHREALTIME $((stat[13] + stat[14]))"
    sleep 0.1
  done
}
default_port=8081
quiet_port=8082
: >"$out/logging.jsonl"
for round in $(seq 1 $((ROUNDS * 2))); do
  order="default off"
  [ $((round % 2)) -eq 0 ] && order="off default"
  for config in $order; do
    if [ "$config" = default ]; then
      serve "default_$round" "$default_port"
      default_pid=$!
      cpu_of "$default_pid" >"$out/cpu-default-$round.txt" &
    else
      serve "quiet_$round" "$quiet_port" RUST_LOG=off
      quiet_pid=$!
      cpu_of "$quiet_pid" >"$out/cpu-off-$round.txt" &
    fi
  done
  for config in $order; do
    if [ "$config" = default ]; then p="$default_port"; else p="$quiet_port"; fi
    measure "$out/logging.jsonl" "$round" logging "$config" \
      --target tessera --base "http://127.0.0.1:$p" --scenario verify
  done
  kill "$default_pid" "$quiet_pid" 2>/dev/null || true
  wait "$default_pid" "$quiet_pid" 2>/dev/null || true
  default_pid=""
  quiet_pid=""
done

# Refresh and verify with SESSIONS (10 M) sessions in the database against 10,000, on two
# servers seeded alike (a user per ten sessions, tessera-bench seed), each round's workers
# on seeded sessions spread over the whole table, the two sizes interleaved A B B A. Before
# the rounds each database is vacuumed and checkpointed (PostgreSQL), as a database that
# has been running would be: straight after a seed its checkpoint was still being written
# and the first rounds measured that, not the size.
seeded_round() {
  local round="$1" size="$2" port="$3" scenario="$4" line
  line="$("$tessera_bench" run --url "http://127.0.0.1:$port" --scenario "$scenario" -c "$CONC" \
    -d "$SECS" --warmup "$WARMUP" --tokens "$out/tokens-$size.jsonl" --json 2>/dev/null | tail -n 1)" || true
  # A run that could not start printed nothing: a round with no successes and an error.
  [ -n "$line" ] || line="{\"scenario\":\"$scenario\",\"rps\":0,\"ok\":0,\"error_total\":1}"
  echo "{\"round\":$round,\"sessions\":$size,${line#\{}" >>"$out/sessions.jsonl"
  echo "  $scenario, $size sessions, round $round: $(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["rps"])' "$line") req/s"
}
if [ "$SESSIONS" -gt 10000 ]; then
  : >"$out/sessions.jsonl"
  port_of=()
  for size in 10000 "$SESSIONS"; do
    url="$(fresh_db "seeded_$size")"
    started=$EPOCHREALTIME
    "$tessera_bench" seed --database-url "$url" --users $(((size + 9) / 10)) --sessions "$size" \
      --emit-tokens "$out/tokens-$size.jsonl" --quiet >"$out/seed-$size.log" 2>&1
    if [ "$backend" = postgres ]; then
      psql "${url%%\?*}" -qc "VACUUM (ANALYZE)" -c CHECKPOINT
    fi
    echo "seeded_$size $(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }') s" | tee -a "$out/summary.txt"
    port_of[size]=$((8083 + ${#seeded_pids[@]}))
    serve_on "seeded_$size" "${port_of[size]}" "$url"
    seeded_pids+=("$!")
  done
  for round in $(seq 1 $((ROUNDS * 2))); do
    sizes="10000 $SESSIONS"
    [ $((round % 2)) -eq 0 ] && sizes="$SESSIONS 10000"
    for scenario in refresh verify; do
      for size in $sizes; do
        seeded_round "$round" "$size" "${port_of[size]}" "$scenario"
      done
    done
  done
  echo "rss_seeded_${SESSIONS}_mib $(awk '$1 == "VmHWM:" { print int($2 / 1024) }' "/proc/${seeded_pids[1]}/status")" |
    tee -a "$out/summary.txt"
  kill "${seeded_pids[@]}" 2>/dev/null || true
  wait "${seeded_pids[@]}" 2>/dev/null || true
  seeded_pids=()
  # The large database is gigabytes: not kept.
  case "$backend" in
    sqlite) rm -f "$out"/tessera-seeded_*.db* ;;
    postgres) for size in 10000 "$SESSIONS"; do psql "$DATABASE_URL" -qc "DROP DATABASE IF EXISTS tessera_bench_seeded_$size"; done ;;
  esac
fi

echo
python3 "$root/scripts/lib/benchmark_targets.py" "$out" | tee "$out/targets.txt"
echo "results in $out"
