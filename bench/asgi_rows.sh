#!/usr/bin/env bash
# The same tether app on its native server and under ASGI servers, side by side with peers.
#
#   bench/asgi_rows.sh [REPS] [SCENARIOS]      (from the project root)
#
# ../shared/bench/servers/start.sh knows `tether` (native) and `tether-uvicorn`; this script
# runs the harness from a temporary copy of ../shared/bench with one more row,
# `tether-granian` (granian --interface asgi, one worker, one runtime thread, uvloop), and
# installs granian and hypercorn into the harness's tether venv. The copy lives in /tmp.
set -euo pipefail
REPS="${1:-2}"
SCENARIOS="${2:-echo_c100_w8,echo_c1_w16,bin16k_c10_w4,fanout_c1000}"
SRC="$(cd "$(dirname "$0")/../../shared/bench" && pwd)"
COPY=/tmp/tether-bench-asgi
VENV="${VENVS:-/tmp/bench-venvs}/tether"
rm -rf "$COPY" && cp -r "$SRC" "$COPY" && chmod -R u+w "$COPY"
"$VENV/bin/pip" install -q granian==2.8.7 >/dev/null 2>&1
python3 - "$COPY" <<'PY'
import sys
copy = sys.argv[1]
start = open(f"{copy}/servers/start.sh").read()
row = ('  tether-granian)       cd "$D" && exec "$V/tether/bin/granian" --interface asgi --host 127.0.0.1 '
       '--port "$PORT" --workers 1 --runtime-threads 1 --loop uvloop --no-access-log --log-level warning '
       '--backlog 4096 tether_app:app ;;\n')
start = start.replace("  *) echo \"unknown server", row + "  *) echo \"unknown server")
open(f"{copy}/servers/start.sh", "w").write(start)
run = open(f"{copy}/run.py").read()
run = run.replace('"tether-uvicorn": {},', '"tether-uvicorn": {},\n    "tether-granian": {},')
open(f"{copy}/run.py", "w").write(run)
PY
python3 "$COPY/run.py" --reps "$REPS" --servers tether,tether-uvicorn,tether-granian,starlette-sansio,picows \
        --scenarios "$SCENARIOS"
