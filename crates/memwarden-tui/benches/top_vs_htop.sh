#!/usr/bin/env bash
# memwarden top against htop, side by side: CPU time each spends over the same minute at a
# 1 s refresh, on the same machine with about 500 processes, and memwarden's resident memory.
#
#   cargo build --release -p memwarden
#   crates/memwarden-tui/benches/top_vs_htop.sh [path/to/memwarden]
#
# Both run at once in two windows of one private tmux server (a real terminal each), so they
# see the same processes and the same load. `sleep` processes are started to bring the machine
# to NPROC processes and ended afterwards. CPU time is utime + stime from /proc/PID/stat, read
# after a warm-up and again SECS seconds later. Needs tmux and htop (.ci/setup installs both).
set -euo pipefail

BIN=${1:-target/release/memwarden}
SECS=${SECS:-60}
NPROC=${NPROC:-500}
WARMUP=${WARMUP:-5}
SOCK="mw-bench-$$"

command -v tmux >/dev/null || { echo "tmux is not installed" >&2; exit 2; }
command -v htop >/dev/null || { echo "htop is not installed" >&2; exit 2; }
[ -x "$BIN" ] || { echo "$BIN is not built (cargo build --release -p memwarden)" >&2; exit 2; }

sleepers=()
cleanup() {
  tmux -L "$SOCK" kill-server 2>/dev/null || true
  if [ ${#sleepers[@]} -gt 0 ]; then kill "${sleepers[@]}" 2>/dev/null || true; fi
}
trap cleanup EXIT

now=$(find /proc -maxdepth 1 -name '[0-9]*' | wc -l)
for _ in $(seq 1 $((NPROC - now))); do
  sleep 100000 &
  sleepers+=($!)
done
total=$(find /proc -maxdepth 1 -name '[0-9]*' | wc -l)

# A private home: no user config, and the audit log (unused here) stays out of the way.
home=$(mktemp -d)
tmux -L "$SOCK" -f /dev/null new-session -d -s bench -x 200 -y 50 \
  "exec env HOME=$home $BIN top --interval 1s"
tmux -L "$SOCK" new-window -d -t bench "exec env HOME=$home htop -d 10"
sleep 1
pids=($(tmux -L "$SOCK" list-panes -s -t bench -F '#{pane_pid}'))
mw=${pids[0]}
ht=${pids[1]}
grep -q memwarden "/proc/$mw/comm" || { echo "memwarden is not running in the pane" >&2; exit 1; }
grep -q htop "/proc/$ht/comm" || { echo "htop is not running in the pane" >&2; exit 1; }

hz=$(getconf CLK_TCK)
cpu() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
sleep "$WARMUP"
mw0=$(cpu "$mw"); ht0=$(cpu "$ht")
sleep "$SECS"
mw1=$(cpu "$mw"); ht1=$(cpu "$ht")
rss() { awk -v k="$2:" '$1 == k { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

div() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
mw_s=$(div $((mw1 - mw0)) "$hz")
ht_s=$(div $((ht1 - ht0)) "$hz")
echo "processes on the machine: $total"
echo "interval: 1 s, measured over ${SECS} s after ${WARMUP} s of warm-up"
printf '%-16s %10s %12s %12s\n' program "CPU s" "RSS MiB" "peak MiB"
printf '%-16s %10s %12s %12s\n' "memwarden top" "$mw_s" "$(rss "$mw" VmRSS)" "$(rss "$mw" VmHWM)"
printf '%-16s %10s %12s %12s\n' "htop" "$ht_s" "$(rss "$ht" VmRSS)" "$(rss "$ht" VmHWM)"
if [ "$ht1" -gt "$ht0" ]; then
  echo "memwarden / htop CPU: $(div $((mw1 - mw0)) $((ht1 - ht0)))"
fi
rm -rf "$home"
