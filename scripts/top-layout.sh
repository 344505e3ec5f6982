#!/usr/bin/env bash
# Lists the functions `memwarden top` runs, for the linker to lay out side by side in the
# release binary (crates/memwarden/build.rs passes the list to lld). Why: the kernel maps a
# file-backed page together with up to 64 KiB around it (fault-around), so a few hundred
# small functions scattered over 8 MB of code cost top ~5 MiB of resident memory; packed
# together they cost ~1 MiB. The list holds mangled names, which change with the toolchain or a
# dependency's version: rerun this after either (names no longer found are skipped, so a stale
# list costs memory, never a failed build).
#
#   cargo build --release -p memwarden
#   scripts/top-layout.sh [path/to/memwarden] [out-file]
#
# top runs under callgrind three times: live on this machine for SECS (120) seconds beside a
# broker that answers (the broker pane), live again with a broker that does not answer, then
# replaying the example recording (GPU cards, device figures, chart).
set -euo pipefail

BIN=${1:-target/release/memwarden}
OUT=${2:-crates/memwarden/top-hot-symbols.txt}
SECS=${SECS:-120}
NPROC=${NPROC:-150}

for tool in valgrind callgrind_control tmux python3 curl nm; do
  pkg=$tool
  [ "$tool" = nm ] && pkg=binutils
  [ "$tool" = callgrind_control ] && pkg=valgrind
  command -v "$tool" >/dev/null || { echo "$tool is not installed (apt-get install $pkg)" >&2; exit 2; }
done
[ -x "$BIN" ] || { echo "$BIN is not built (cargo build --release -p memwarden)" >&2; exit 2; }
BIN=$(realpath "$BIN")

work=$(mktemp -d)
SOCK="mw-layout-$$"
broker=""
sleepers=()
cleanup() {
  tmux -L "$SOCK" kill-server 2>/dev/null || true
  if [ ${#sleepers[@]} -gt 0 ]; then kill "${sleepers[@]}" 2>/dev/null || true; fi
  [ -n "$broker" ] && kill "$broker" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Enough processes for the long lists' paths (sorts), few enough that top under callgrind
# still takes the samples that let the analysis find phases and change points.
now=$(find /proc -maxdepth 1 -name '[0-9]*' | wc -l)
for _ in $(seq 1 $((NPROC - now))); do
  sleep 100000 &
  sleepers+=($!)
done

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
closed=$(free_port)
cat >"$work/broker.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
[[pool]]
name = "ram"
kind = "ram"
capacity = "1GiB"
[[consumer]]
name = "chat"
pool = "ram"
resident = "64MiB"
EOF
"$BIN" serve --config "$work/broker.toml" >"$work/broker.log" 2>&1 &
broker=$!
for _ in $(seq 1 50); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

# Runs top under callgrind in a 200 × 50 tmux window for $2 seconds, then quits it with q.
# At $3 seconds the profile so far (the start: $name.out.1) is written apart from the rest
# ($name.out), so that code run only at start can be laid out after the code run each sample.
profile() {
  local name=$1 secs=$2 start=$3
  shift 3
  tmux -L "$SOCK" -f /dev/null new-session -d -s "$name" -x 200 -y 50 \
    "exec env HOME=$work valgrind --tool=callgrind --demangle=no \
       --callgrind-out-file=$work/$name.out $BIN top $* 2>$work/$name.err"
  local pid
  pid=$(tmux -L "$SOCK" display-message -p -t "$name" '#{pane_pid}')
  sleep "$start"
  callgrind_control -d "$pid" >/dev/null
  sleep $((secs - start))
  tmux -L "$SOCK" send-keys -t "$name" q
  for _ in $(seq 1 100); do
    [ -s "$work/$name.out" ] && ! tmux -L "$SOCK" has-session -t "$name" 2>/dev/null && break
    sleep 0.2
  done
  for f in "$work/$name.out" "$work/$name.out.1"; do
    [ -s "$f" ] || { echo "top under callgrind left no profile $f:" >&2; cat "$work/$name.err" >&2; exit 1; }
  done
}
profile broker "$SECS" 20 --interval 500ms --broker "http://127.0.0.1:$port"
profile alone "$SECS" 20 --interval 500ms --broker "http://127.0.0.1:$closed"
profile replay 20 8 --replay "$(dirname "$0")/../examples/training-beside-inference.jsonl" --speed 10

# Every function of the binary callgrind saw run (fn= and cfn= lines name each the first time),
# kept only if the binary defines it: first those run after the start, in the order first seen,
# then those run only at start (which top unmaps once it has started, crates/memwarden-tui/src/
# resident.rs).
python3 - "$BIN" "$OUT" "$work"/{broker,alone,replay}.out "$work"/{broker,alone,replay}.out.1 <<'EOF'
import re, subprocess, sys
binary, out, profiles = sys.argv[1], sys.argv[2], sys.argv[3:]
defined = set()
nm = subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True, check=True)
for line in nm.stdout.splitlines():
    parts = line.split()
    if len(parts) == 3 and parts[1] in "tTwW":
        defined.add(parts[2])
seen, names, steady = set(), [], 0
for i, path in enumerate(profiles):
    if i == len(profiles) // 2:
        steady = len(names)
    for line in open(path, errors="replace"):
        m = re.match(r"c?fn=\(\d+\) (\S+)", line)
        if not m:
            continue
        name = re.sub(r"'\d+$", "", m.group(1))
        if name in defined and name not in seen:
            seen.add(name)
            names.append(name)
with open(out, "w") as f:
    f.write("\n".join(names) + "\n")
print(f"{len(names)} functions top runs written to {out}, {steady} of them after the start")
EOF
