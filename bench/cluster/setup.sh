#!/usr/bin/env bash
# Recreate the cluster fan-out peers' venvs under $VENVS (default /tmp/bench-venvs):
#   cluster-channels   Django + Channels + channels_redis, served by uvicorn
#   cluster-panther    Panther + redis-py, served by uvicorn
#   cluster-litestar   Litestar (channels plugin) + redis-py, served by uvicorn
# Exact versions come from locks/<name>.txt (pip freeze of the venv that was measured);
# FRESH=1 ignores the locks, installs the top-level pins below and rewrites the locks.
#
#   bench/cluster/setup.sh                      # all three, from the locks
#   bench/cluster/setup.sh litestar             # only one
#   FRESH=1 bench/cluster/setup.sh channels     # re-resolve, rewrite locks/channels.txt
#   bench/cluster/setup.sh tether               # add the Redis client to the tether venv (below)
#
# The tether row uses $TETHER_VENV (default $VENVS/tether), made by ../shared/bench/setup.sh tether
# (run from the project root): an editable install of the checkout, but without the `redis` extra
# the backplane needs. `setup.sh tether` adds exactly locks/tether-redis.txt (redis-py + hiredis,
# the `tether[redis]` extra's packages) to that venv, --no-deps, and touches nothing else in it.
# redis-server comes from the system (/usr/bin/redis-server, Debian package redis-server).
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"
VENVS="${VENVS:-/tmp/bench-venvs}"
PY="${PYTHON:-python3}"
mkdir -p "$VENVS" "$HERE/locks"

# name -> top-level requirements (the full transitive set is pinned in locks/<name>.txt).
# All three are served by uvicorn 0.54.0 with uvloop + httptools + websockets (uvicorn[standard]; Panther
# pins httptools~=0.7.1, so it lists them one by one, as the shared harness does), --ws websockets-sansio.
declare -A REQS=(
  [channels]="Django==5.2.19 channels==4.3.2 channels-redis==4.3.0 uvicorn[standard]==0.54.0"
  [panther]="panther==5.5.0 redis==6.2.0 uvicorn==0.54.0 uvloop==0.23.0 websockets==17.4"
  [litestar]="litestar==2.25.0 redis==8.1.0 uvicorn[standard]==0.54.0"
)
ORDER=(channels panther litestar)
[ $# -gt 0 ] && ORDER=("$@")

fail=0
for name in "${ORDER[@]}"; do
  if [ "$name" = tether ]; then
    tv="${TETHER_VENV:-$VENVS/tether}"
    echo "=== tether (redis extra) -> $tv"
    if [ ! -x "$tv/bin/python" ] || ! "$tv/bin/python" -c "import tether" 2>/dev/null; then
      echo "FAIL tether: $tv has no tether; from the project root run ../shared/bench/setup.sh tether first"
      fail=1; continue
    fi
    if "$tv/bin/pip" install -q --no-deps -r "$HERE/locks/tether-redis.txt" > "$tv/install-redis.log" 2>&1 &&
       "$tv/bin/python" -c "import redis.asyncio, hiredis" 2>>"$tv/install-redis.log"; then
      echo "OK   tether ($(tr '\n' ' ' < "$HERE/locks/tether-redis.txt"))"
    else
      echo "FAIL tether (see $tv/install-redis.log)"; tail -5 "$tv/install-redis.log"; fail=1
    fi
    continue
  fi
  [ -n "${REQS[$name]:-}" ] || { echo "unknown peer $name (known: ${!REQS[*]})"; fail=1; continue; }
  v="$VENVS/cluster-$name"
  echo "=== $name -> $v"
  rm -rf "$v"
  "$PY" -m venv "$v" || { echo "FAIL venv $name"; fail=1; continue; }
  "$v/bin/pip" install -q --upgrade pip >/dev/null 2>&1
  lock="$HERE/locks/$name.txt"
  if [ -z "${FRESH:-}" ] && [ -s "$lock" ]; then
    "$v/bin/pip" install -q --no-deps -r "$lock" > "$v/install.log" 2>&1
  else
    # shellcheck disable=SC2086
    "$v/bin/pip" install -q ${REQS[$name]} > "$v/install.log" 2>&1
  fi
  rc=$?
  if [ $rc -eq 0 ]; then
    "$v/bin/pip" check >> "$v/install.log" 2>&1 || echo "WARN $name: pip check reports problems (see $v/install.log)"
    if [ -n "${FRESH:-}" ] || [ ! -s "$lock" ]; then
      "$v/bin/pip" freeze --exclude-editable | grep -v '^pip==' > "$lock.new" && mv "$lock.new" "$lock"
    fi
    echo "OK   $name ($(grep -iE "^(django|channels|channels.redis|panther|litestar|redis|uvicorn)==" "$lock" | tr '\n' ' '))"
  else
    echo "FAIL $name (see $v/install.log)"; tail -5 "$v/install.log"; fail=1
  fi
done
exit $fail
