#!/usr/bin/env bash
# Runs spin on model/seigo.pml: generate the verifier, compile it, search the whole state space.
#
#   run_model.sh [options] NAME EXPECT [-DFLAG ...]
#
#   NAME    a label for the summary line ("correct protocol", "BROKEN_NO_FENCE", ...)
#   EXPECT  pass            exit 0 iff pan reports 0 errors (exhaustively: no depth truncation)
#           violation       exit 0 iff pan reports errors > 0
#           violation:WHAT  ... and the first one found is WHAT: a property bit of the model
#                           (P1_atomicity, P2_decision_changed, ...) or "invalid_end_state"
#   -DFLAG  passed to spin -a (the model's variants and size knobs, see seigo.pml)
#
# Options:
#   --model FILE    the model (default: seigo.pml next to this script)
#   --trail FILE    on a violation, write spin's replay of the counterexample to FILE
#   --keep          keep the temporary work directory (printed)
# Environment: SPIN (default spin), CC (default cc), PAN_CFLAGS (default -O2 for "pass", -O0
# for "violation": those searches stop early, compile time dominates), PAN_MEMLIM_MB (2048),
# PAN_HASH_LOG2 (23).
#
# Prints one summary line, e.g.
#   model: correct protocol: 0 errors, 3122681 states stored, 9400000 transitions, depth 170, 3.1 s
# and on an unexpected result pan's report and the counterexample.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
model="$here/seigo.pml"
trail_out=""
keep=0
while [[ $# -gt 0 && "$1" == --* ]]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --trail) trail_out="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    *) echo "run_model.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
if [[ $# -lt 2 ]]; then
  sed -n '2,25p' "$0" >&2
  exit 2
fi
name="$1"; expect="$2"; shift 2
defines=("$@")
for d in "${defines[@]}"; do
  [[ "$d" == -D* ]] || { echo "run_model.sh: not a -D flag: $d" >&2; exit 2; }
done
want_what=""
case "$expect" in
  pass) ;;
  violation) ;;
  violation:*) want_what="${expect#violation:}"; expect=violation ;;
  *) echo "run_model.sh: EXPECT must be pass, violation or violation:WHAT" >&2; exit 2 ;;
esac

SPIN="${SPIN:-spin}"
CC="${CC:-cc}"
if [[ "$expect" == pass ]]; then cflags_default="-O2"; else cflags_default="-O0"; fi
PAN_CFLAGS="${PAN_CFLAGS:-$cflags_default}"
memlim="${PAN_MEMLIM_MB:-2048}"
hashlog="${PAN_HASH_LOG2:-23}"
command -v "$SPIN" >/dev/null || { echo "model: $name: $SPIN not found (apt-get install spin)" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/seigo-model.XXXXXX")"
if [[ $keep -eq 0 ]]; then trap 'rm -rf "$work"' EXIT; else echo "model: work dir $work"; fi
cp "$model" "$work/seigo.pml"
cd "$work"

start=$(date +%s.%N)
if ! "$SPIN" -a "${defines[@]}" seigo.pml >spin.out 2>&1; then
  echo "model: $name: spin -a failed:" >&2; cat spin.out >&2; exit 1
fi
# -DSAFETY: safety properties only (assertions, invalid end states), no cycle detection.
# No -DBITSTATE: every state is stored exactly, so "0 errors" means none in the whole space.
# shellcheck disable=SC2086
if ! "$CC" $PAN_CFLAGS -DSAFETY -DMEMLIM="$memlim" -o pan pan.c >cc.out 2>&1; then
  echo "model: $name: compiling pan failed:" >&2; cat cc.out >&2; exit 1
fi
# -m: depth limit, far above the model's longest path (about 200 steps); -w: hash table size.
./pan -m100000 -w"$hashlog" >pan.out 2>&1 || true
end=$(date +%s.%N)
secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')

errors=$(sed -n 's/.*errors: \([0-9][0-9]*\).*/\1/p' pan.out | head -1)
stored=$(awk '/states, stored/ { print $1; exit }' pan.out)
transitions=$(awk '/transitions \(= stored\+matched\)/ { print $1; exit }' pan.out)
depth=$(sed -n 's/.*depth reached \([0-9][0-9]*\).*/\1/p' pan.out | head -1)
if [[ -z "$errors" || -z "$stored" ]]; then
  echo "model: $name: pan did not finish:" >&2; cat pan.out >&2; exit 1
fi
if grep -q "max search depth too small" pan.out; then
  echo "model: $name: search truncated by the depth limit: not exhaustive" >&2; cat pan.out >&2
  exit 1
fi
if grep -q "out of memory\|memory limit" pan.out; then
  echo "model: $name: pan ran out of memory (PAN_MEMLIM_MB=$memlim)" >&2; cat pan.out >&2; exit 1
fi

# Which check failed first: "assertion violated  !(P3_...)" or "invalid end state".
what=""
if [[ "$errors" != 0 ]]; then
  what=$(sed -n 's/.*assertion violated *!(\(P[0-9]_[A-Za-z_]*\)).*/\1/p' pan.out | head -1)
  [[ -z "$what" ]] && grep -q "invalid end state" pan.out && what="invalid_end_state"
  [[ -z "$what" ]] && what=$(grep -m1 "^pan:1:" pan.out | sed 's/^pan:1: //')
  # A readable counterexample: spin replays pan's trail.
  "$SPIN" -t -p -g -l "${defines[@]}" seigo.pml >trail.txt 2>&1 || true
  [[ -n "$trail_out" ]] && cp trail.txt "$trail_out"
fi

stats="$stored states stored, $transitions transitions, depth $depth, $secs s"
if [[ "$expect" == pass ]]; then
  if [[ "$errors" == 0 ]]; then
    echo "model: $name: 0 errors, $stats"
    exit 0
  fi
  echo "model: $name: UNEXPECTED: $errors error(s), first: $what ($stats)"
  cat pan.out
  echo "---- counterexample (spin -t -p -g -l) ----"
  cat trail.txt
  exit 1
fi

if [[ "$errors" == 0 ]]; then
  echo "model: $name: UNEXPECTED: no violation found ($stats)"
  exit 1
fi
if [[ -n "$want_what" && "$what" != "$want_what" ]]; then
  echo "model: $name: UNEXPECTED: expected a $want_what violation, found $what ($stats)"
  cat pan.out
  echo "---- counterexample (spin -t -p -g -l) ----"
  cat trail.txt
  exit 1
fi
at=$(sed -n 's/.*(at depth \([0-9][0-9]*\)).*/\1/p' pan.out | head -1)
echo "model: $name: violation found as expected: $what at depth ${at:-?} ($stats)"
exit 0
