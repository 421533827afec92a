#!/usr/bin/env bash
# Interleaved A/B benchmark: this checkout (`tether`) against a base revision (`tether-base`),
# in one session, on the shared harness.
#
#   bench/ab.sh BASE_REV [REPS] [SCENARIOS]      (from the project root)
#
#   BASE_REV   any git revision of this repository, e.g. 8a50a78 or HEAD~1 (HEAD = compare
#              the uncommitted work in progress against the last commit)
#   REPS       repetitions per (server, scenario), default 3
#   SCENARIOS  comma-separated run.py scenarios, default the set in BENCHMARKS.md:
#              echo_c100_w8,bin16k_c10_w4,fanout_c1000,rtt,echo_c1_w16,idle_c5000,handshake
#
# The `tether` row is the harness's own: ../shared/bench/setup.sh's venv $VENVS/tether, an
# editable install of this checkout (run `TETHER_SRC=$PWD ../shared/bench/setup.sh tether` once).
# This script
#   1. (re)creates a detached git worktree of BASE_REV in $AB_BASE_DIR (default
#      /tmp/tether-base; `git archive` into it if worktree is refused) - this checkout's
#      working tree and index are not touched;
#   2. (re)creates the venv $VENVS/tether-base with that tree installed editable, with the
#      same versions of every other package as $VENVS/tether (its pip freeze as constraints),
#      and checks that each venv imports its own tether with the C unmasking accelerator
#      (tether.protocol._mask, masking.ACCELERATED is True);
#   3. copies ../shared/bench to /tmp/tether-bench-ab with one more row, `tether-base`: the
#      `tether` row's command line with the tether-base venv, run from the copy's servers/,
#      so both rows serve the very same tether_app.py (registered in run.py the way
#      bench/asgi_rows.sh registers tether-granian);
#   4. runs run.py with --servers tether,tether-base (order shuffled per scenario and
#      repetition, a fresh server per run) into bench-results/ab-<timestamp>/, which prints
#      report.py's tables; src/'s git status, diff and a fingerprint go there too;
#   5. prints bench/ab_report.py's table: per scenario the primary metric's median for each
#      side, the ratio new/base and which way is better, flagging any scenario more than
#      AB_THRESHOLD % (default 3) worse.
# Exit status 1 if a scenario is flagged or lacks an ok run on either side, or if src/ changed
# while the runs went on (the tether venv is editable: each server start imports src/ as it is
# then, so an edit mid-run mixes versions; AB_SNAPSHOT=1 avoids that).
#
# Environment:
#   VENVS         venvs folder (default /tmp/bench-venvs)
#   AB_BASE_DIR   where the base tree goes (default /tmp/tether-base)
#   AB_SNAPSHOT=1 the `tether` row runs a copy of src/ (+ build files) taken at the start, in
#                 /tmp/tether-new with its own venv $VENVS/tether-new, instead of the live tree
#   AB_THRESHOLD  flag threshold in % (default 3)
#   AB_MAX_OTHER  use only runs whose other-process CPU <= this % of a core, where a cell has
#                 such runs (default: all ok runs)
#   RUN_ARGS      extra run.py options, e.g. "--quiet-pct 101" or "--nice 0"
# Only processes started here are signalled (run.py stops each server by PID, bounded).
set -euo pipefail
BASE_REV="${1:?usage: bench/ab.sh BASE_REV [REPS] [SCENARIOS]}"
REPS="${2:-3}"
SCENARIOS="${3:-echo_c100_w8,bin16k_c10_w4,fanout_c1000,rtt,echo_c1_w16,idle_c5000,handshake}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SRC="$(cd "$ROOT/../shared/bench" && pwd)"
VENVS="${VENVS:-/tmp/bench-venvs}"
export VENVS
export GIT_OPTIONAL_LOCKS=0   # `git status` below must not even refresh this checkout's index
BASE_DIR="${AB_BASE_DIR:-/tmp/tether-base}"
COPY=/tmp/tether-bench-ab
REF_VENV="$VENVS/tether"
BASE_VENV="$VENVS/tether-base"
PY="${PYTHON:-python3}"

[ -x "$REF_VENV/bin/python" ] || {
  echo "no $REF_VENV: run  TETHER_SRC=\$PWD ../shared/bench/setup.sh tether  first" >&2; exit 2; }
REV="$(git -C "$ROOT" rev-parse --verify "$BASE_REV^{commit}")"
DIRTY="$(git -C "$ROOT" status --porcelain -- src)"
echo "# A/B: new  = $ROOT (HEAD $(git -C "$ROOT" rev-parse --short HEAD)${DIRTY:+ + uncommitted/untracked changes in src/})"
echo "#      base = $BASE_REV = ${REV:0:12} -> $BASE_DIR"

src_fingerprint() {  # the project's source as it is on disk now
  (cd "$ROOT" && find src -type f \( -name '*.py' -o -name '*.c' \) -not -path '*/__pycache__/*' -print0 \
     | LC_ALL=C sort -z | xargs -0 sha1sum | sha1sum | cut -c1-12)
}
FP0="$(src_fingerprint)"

CONSTRAINTS="$(mktemp /tmp/tether-ab-constraints.XXXXXX)"
trap 'rm -f "$CONSTRAINTS"' EXIT
"$REF_VENV/bin/pip" freeze --exclude-editable | grep -v -e '^pip==' -e '^-e ' -e '^#' > "$CONSTRAINTS" || true
make_venv() {  # venv source-dir: editable install, third-party versions as in the tether venv
  rm -rf "$1"
  "$PY" -m venv "$1"
  "$1/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
  if ! "$1/bin/pip" install -q -c "$CONSTRAINTS" -e "$2" "uvicorn[standard]==0.54.0" > "$1/install.log" 2>&1; then
    echo "FAIL installing $2 into $1:" >&2; tail -20 "$1/install.log" >&2; exit 2
  fi
}
check() {  # venv expected-source-dir: imports its own tether, with the C accelerator
  (cd /tmp && "$1/bin/python" - "$2" <<'PY'
import os, sys
src = os.path.realpath(sys.argv[1])
try:
    import tether, tether.protocol.masking as m
except Exception as e:
    sys.exit(f"{sys.prefix}: tether from {src} does not import ({e!r}): work in progress? "
             "(AB_SNAPSHOT=1 snapshots src/ at the start; it must import then)")
where = os.path.realpath(tether.__file__)
print(f"#   {sys.prefix}: tether from {os.path.dirname(where)}, masking.ACCELERATED={m.ACCELERATED}")
if not where.startswith(src + os.sep):
    sys.exit(f"tether is imported from {where}, not from {src}")
if m.ACCELERATED is not True:
    sys.exit("the C extension tether.protocol._mask is not built")
PY
  )
}

# 1. the new side: the live checkout (the harness's tether venv), or a snapshot of it
NEW_VENV="$REF_VENV"; NEW_DIR="$ROOT"
if [ -n "${AB_SNAPSHOT:-}" ]; then
  NEW_DIR=/tmp/tether-new; NEW_VENV="$VENVS/tether-new"
  rm -rf "$NEW_DIR" && mkdir -p "$NEW_DIR"
  for f in pyproject.toml setup.py setup.cfg MANIFEST.in README.md LICENSE; do
    if [ -e "$ROOT/$f" ]; then cp -p "$ROOT/$f" "$NEW_DIR/"; fi
  done
  tar -C "$ROOT" --exclude=__pycache__ --exclude='*.so' --exclude='*.egg-info' -cf - src | tar -C "$NEW_DIR" -xf -
  make_venv "$NEW_VENV" "$NEW_DIR"
  echo "# new side snapshot of src/ ($FP0) -> $NEW_DIR, venv $NEW_VENV"
fi

# 2. the base tree and its venv
rm -rf "$BASE_DIR"
git -C "$ROOT" worktree prune   # forgets the worktree just removed, if it was one
if ! git -C "$ROOT" worktree add --detach --quiet "$BASE_DIR" "$REV"; then
  echo "# worktree refused; using git archive" >&2
  rm -rf "$BASE_DIR" && mkdir -p "$BASE_DIR"
  git -C "$ROOT" archive "$REV" | tar -x -C "$BASE_DIR"
fi
make_venv "$BASE_VENV" "$BASE_DIR"
check "$NEW_VENV" "$NEW_DIR"
check "$BASE_VENV" "$BASE_DIR"

# 3. the harness copy with the tether-base row
rm -rf "$COPY" && cp -r "$SRC" "$COPY" && chmod -R u+w "$COPY"
rm -f "$COPY/loadgen"   # rebuilt by run.py from the copy's loadgen.c
"$PY" - "$COPY" "$(basename "$NEW_VENV")" <<'PY'
import sys
copy, new_venv = sys.argv[1:]
path = f"{copy}/servers/start.sh"
start = open(path).read()
tether_row = next(line for line in start.splitlines() if line.lstrip().startswith("tether)"))
assert '"$V/tether/bin/python" -m tether run' in tether_row, tether_row
row = tether_row.replace("tether)", "tether-base)", 1).replace('"$V/tether/bin/', '"$V/tether-base/bin/')
new_row = tether_row.replace('"$V/tether/bin/', f'"$V/{new_venv}/bin/')
anchor = '  *) echo "unknown server'
assert anchor in start
start = start.replace(tether_row, new_row, 1).replace(anchor, row + "\n" + anchor, 1)
open(path, "w").write(start)
path = f"{copy}/run.py"
run = open(path).read()
anchor = '"tether-uvicorn": {},'
assert anchor in run
open(path, "w").write(run.replace(anchor, anchor + '\n    "tether-base": {},', 1))
print("# start.sh rows:", new_row.strip(), "\n#                ", row.strip())
PY

# 4. the interleaved run, with a record of what src/ held
OUT="$ROOT/bench-results/ab-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
printf '%s\n' "$DIRTY" > "$OUT/new-src.status"
git -C "$ROOT" diff HEAD -- src > "$OUT/new-src.diff"
printf '%s\n' "base=$REV" "new_head=$(git -C "$ROOT" rev-parse HEAD)" "new_dir=$NEW_DIR" \
       "new_src_fingerprint=$FP0" > "$OUT/ab.txt"
echo "# new src/ fingerprint $FP0 ($(grep -c . "$OUT/new-src.status" || true) changed/untracked paths; see $OUT/new-src.*)"
# shellcheck disable=SC2086
"$PY" "$COPY/run.py" --reps "$REPS" --servers tether,tether-base --scenarios "$SCENARIOS" \
      --out "$OUT" ${RUN_ARGS:-}
FP1="$(src_fingerprint)"
echo "new_src_fingerprint_after=$FP1" >> "$OUT/ab.txt"

# 5. the A/B table
echo
rc=0
"$PY" "$ROOT/bench/ab_report.py" --harness "$COPY" --threshold "${AB_THRESHOLD:-3}" \
      ${AB_MAX_OTHER:+--max-other "$AB_MAX_OTHER"} --scenarios "$SCENARIOS" "$OUT/results.jsonl" || rc=$?
if [ "$FP1" != "$FP0" ]; then
  if [ -n "${AB_SNAPSHOT:-}" ]; then
    echo "note: src/ changed during the run ($FP0 -> $FP1); the tether rows ran the snapshot taken at the start"
  else
    echo "WARNING: src/ changed during the run (fingerprint $FP0 -> $FP1): the tether rows mix versions"
    rc=1
  fi
fi
exit "$rc"
