#!/usr/bin/env bash
# Instructions per message of this checkout against another revision, with callgrind: the
# same count run after run, whatever else the machine does (a noisy machine cannot fake it).
#
#   bench/callgrind_ab.sh [NEW_VENV] [BASE_VENV]
#
# Defaults: $VENVS/tether (this checkout, editable) and $VENVS/tether-base (made by
# bench/ab.sh). Each mode (bench/hotpath.py: WebSocket echo, broadcast to 200, publish into a
# room of 200 members, HTTP GET one and eight per read) runs at two sizes; the difference
# divided by the extra messages removes start-up from the count. MODES="pub bc" runs only
# those rows.
set -euo pipefail
VENVS="${VENVS:-/tmp/bench-venvs}"
NEW="${1:-$VENVS/tether}"
BASE="${2:-$VENVS/tether-base}"
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="$(mktemp -d)"
count() {  # venv mode n -> instructions
  valgrind --tool=callgrind --callgrind-out-file="$OUT/cg" "$1/bin/python" "$HERE/hotpath.py" "$2" "$3" 2>&1 \
    | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
printf "%-6s %-14s %16s %16s %8s\n" mode unit new base new/base
for spec in "echo 8000 24000 message" "bc 800 2400 broadcast(200)" "pub 800 2400 publish(200)" \
            "get 1000 3000 request" "get8 1000 3000 request"; do
  set -- $spec
  mode=$1 small=$2 large=$3 unit=$4
  if [ -n "${MODES:-}" ] && [[ " $MODES " != *" $mode "* ]]; then continue; fi
  n1=$(count "$NEW" "$mode" "$small"); n2=$(count "$NEW" "$mode" "$large")
  b1=$(count "$BASE" "$mode" "$small"); b2=$(count "$BASE" "$mode" "$large")
  python3 - "$mode" "$unit" "$n1" "$n2" "$b1" "$b2" "$small" "$large" <<'PY'
import sys
mode, unit, n1, n2, b1, b2, small, large = sys.argv[1:]
per = lambda a, b: (int(b) - int(a)) / (int(large) - int(small))
new, base = per(n1, n2), per(b1, b2)
print(f"{mode:<6} {unit:<14} {new:16,.0f} {base:16,.0f} {new / base:8.3f}")
PY
done
rm -rf "$OUT"
