#!/usr/bin/env bash
# QA of issue 19's run-directory, signal and file cases (items 5-8, 13, 14, 16), as a user meets them: the
# real CLI (`python -m pipelines run|compile|submit`), real processes, real signals.
#
#   bash hack/qa/run_dir.sh            (from the repository root, as root for the full-disk case; PYTHON
#                                      defaults to .venv/bin/python; about 3 minutes on 2 busy cores)
#
# Each case prints `held` or `FAILED` and why; the script exits non-zero if any failed. The full-disk case
# mounts a 64 KiB tmpfs and is `skipped` (with the reason) where mounting is not permitted.
set -uo pipefail

PYTHON="${PYTHON:-.venv/bin/python}"
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null; done
  mountpoint -q "$work/tmpfs" 2>/dev/null && umount -l "$work/tmpfs"
  rm -rf "$work"
}
trap cleanup EXIT
export MLFLOW_TRACKING_URI="sqlite:///$work/mlflow.db" PYTHONUNBUFFERED=1  # never the user's own store
passed=0
failed=0
skipped=0
run=("$PYTHON" -m pipelines run --max-rows 60 --epochs 1)

say() {  # say NAME WHY-OR-EMPTY DETAIL
  if [ -z "$2" ]; then
    passed=$((passed + 1)); printf 'held     %-34s %s\n' "$1" "$3"
  else
    failed=$((failed + 1)); printf 'FAILED   %-34s %s\n' "$1" "$2"
  fi
}

# one_error FILE CODE WANT WORDS: why FILE (stderr) with exit CODE is not "exit WANT, one error: line with WORDS"
one_error() {
  local lines; lines=$(wc -l <"$1")
  if [ "$2" -ne "$3" ]; then echo "exit $2, not $3: $(head -c 300 "$1")"
  elif [ "$lines" -ne 1 ]; then echo "$lines lines on stderr, not 1: $(head -c 300 "$1")"
  elif ! grep -q '^error: ' "$1"; then echo "stderr does not start with 'error:'"
  elif ! grep -qF -- "$4" "$1"; then echo "the error does not say: $4 ($(head -c 300 "$1"))"
  fi
}

# wait_line FILE PREFIX SECONDS: until a line of FILE starts with PREFIX
wait_line() {
  local deadline=$((SECONDS + $3))
  until grep -q "^$2" "$1" 2>/dev/null; do
    [ $SECONDS -ge "$deadline" ] && return 1
    sleep 0.2
  done
}

# below PID: the processes below PID, once its step has started some (space-separated)
below() {
  local found="" deadline=$((SECONDS + 30))
  while [ -z "$found" ] && [ $SECONDS -lt "$deadline" ]; do
    found=$("$PYTHON" -c 'import sys; from pipelines.reaper import descendants as d; print(*d(int(sys.argv[1])))' "$1")
    [ -z "$found" ] && sleep 0.2
  done
  sleep 1
  "$PYTHON" -c 'import sys; from pipelines.reaper import descendants as d; print(*d(int(sys.argv[1])))' "$1"
}

# alive PID...: those of PID... still running (not gone, not a zombie)
alive() {
  local pid
  for pid in "$@"; do
    [ -r "/proc/$pid/stat" ] || continue
    [ "$(sed 's/.*) \(.\).*/\1/' "/proc/$pid/stat" 2>/dev/null)" = Z ] || printf '%s ' "$pid"
  done
}

status_of() { "$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["status"])' "$1" 2>/dev/null; }

# 5. --overwrite with bad input: the earlier run's summary is untouched
name=overwrite-bad-input-keeps-the-run
mkdir -p "$work/earlier" && echo '{"status": "succeeded"}' >"$work/earlier/summary.json"
"${run[@]}" --output "$work/earlier" --overwrite --data "$work/missing.csv" 2>"$work/err" >/dev/null
why=$(one_error "$work/err" $? 2 "does not exist")
[ -z "$why" ] && [ "$(status_of "$work/earlier/summary.json")" != succeeded ] && why="summary.json changed"
say "$name" "$why" "exit 2, summary.json kept"

# 6. two runs into one --output at the same moment: exactly one proceeds, the other exits 2 naming it
name=two-runs-one-output
"${run[@]}" --output "$work/shared" >"$work/a.out" 2>"$work/a.err" & a=$!
"${run[@]}" --output "$work/shared" >"$work/b.out" 2>"$work/b.err" & b=$!
pids+=("$a" "$b")
started=$SECONDS
while kill -0 "$a" 2>/dev/null && kill -0 "$b" 2>/dev/null && [ $((SECONDS - started)) -lt 120 ]; do sleep 0.2; done
if ! kill -0 "$a" 2>/dev/null; then wait "$a"; code=$?; refused=a; running=$b; else wait "$b"; code=$?; refused=b; running=$a; fi
why=$(one_error "$work/$refused.err" "$code" 2 "is in use by another run (pid $running ")
[ -z "$why" ] && ! kill -0 "$running" 2>/dev/null && why="the other run is not running either"
say "$name" "$why" "one exit 2 after $((SECONDS - started)) s: $(cut -c1-110 "$work/$refused.err")"

# 7. SIGTERM to the run that proceeds, during a step: exit 143, "terminated", nothing of it alive 5 s later
name=sigterm-during-a-step
other=$([ "$refused" = a ] && echo b || echo a)
why=""
if wait_line "$work/$other.out" "▶ featurize-reviews" 180; then
  procs=$(below "$running")
  kill -TERM "$running"
  wait "$running"; code=$?
  sleep 5
  left=$(alive "$running" $procs)
  if [ "$code" -ne 143 ]; then why="exit $code, not 143"
  elif [ "$(status_of "$work/shared/summary.json")" != terminated ]; then why="summary.json status is not terminated"
  elif [ -n "$left" ]; then why="still alive 5 s later: $left"
  elif grep -q Traceback "$work/$other.err"; then why="a traceback on stderr"
  fi
  say "$name" "$why" "exit 143, status terminated, none of $(echo $procs | wc -w) step processes alive 5 s later"
else
  say "$name" "the run never reached featurize-reviews: $(tail -3 "$work/$other.err")" ""
fi

# 7. kill -9 of a run: no orphan; its directory refused, then taken over with --overwrite (and said so)
name=kill-9-leaves-no-orphan
"${run[@]}" --output "$work/killed" >"$work/k.out" 2>"$work/k.err" & k=$!
pids+=("$k")
if wait_line "$work/k.out" "▶ check-bias" 180; then
  procs=$(below "$k")
  kill -9 "$k"; wait "$k" 2>/dev/null
  sleep 5
  left=$(alive $procs)
  say "$name" "${left:+still alive 5 s later: $left}" "none of $(echo $procs | wc -w) step processes alive 5 s later"
else
  say "$name" "the run never reached check-bias: $(tail -3 "$work/k.err")" ""
fi
name=killed-run-dir-refused
"${run[@]}" --output "$work/killed" >/dev/null 2>"$work/err"
say "$name" "$(one_error "$work/err" $? 2 "killed before it ended (pid $k ")" "$(cut -c1-110 "$work/err")"
name=killed-run-dir-taken-over
"${run[@]}" --output "$work/killed" --overwrite >"$work/t.out" 2>"$work/t.err" & t=$!
pids+=("$t")
why=""
if wait_line "$work/t.out" "▶ prepare-reviews" 180; then
  grep -q "^--overwrite: taking over .*pid $k " "$work/t.out" || why="it did not say it takes the directory over"
  kill -INT "$t"; wait "$t"; code=$?
  [ -z "$why" ] && [ "$code" -ne 130 ] && why="Ctrl-C: exit $code, not 130"
  [ -z "$why" ] && [ "$(status_of "$work/killed/summary.json")" != interrupted ] && why="status is not interrupted"
else
  why="the run never started: $(tail -3 "$work/t.err")"
fi
say "$name" "$why" "said so, then Ctrl-C: exit 130, status interrupted"

# 8. an --output on a 100 % full file system
name=full-disk
mkdir -p "$work/tmpfs"
if mount -t tmpfs -o size=64k tmpfs "$work/tmpfs" 2>"$work/mount.err"; then
  dd if=/dev/zero of="$work/tmpfs/fill" bs=4k 2>/dev/null
  "${run[@]}" --output "$work/tmpfs/run" >/dev/null 2>"$work/err"
  why=$(one_error "$work/err" $? 2 "is full")
  [ -z "$why" ] && [ -e "$work/tmpfs/run" ] && why="it wrote $work/tmpfs/run"
  say "$name" "$why" "$(cut -c1-110 "$work/err")"
  umount -l "$work/tmpfs"
else
  skipped=$((skipped + 1)); printf 'skipped  %-34s cannot mount a tmpfs: %s\n' "$name" "$(cat "$work/mount.err")"
fi

# 13. options the run would not use
name=tuning-spec-without-trials
"${run[@]}" --output "$work/unused" --tuning-spec 'parameters: [unclosed' >/dev/null 2>"$work/err"
say "$name" "$(one_error "$work/err" $? 2 "--tuning-spec is not used: --tuning-trials is 0")" "$(cut -c1-110 "$work/err")"
name=rating-column-beside-label-column
"${run[@]}" --output "$work/unused" --label-column sentiment --rating-column Nope >/dev/null 2>"$work/err"
say "$name" "$(one_error "$work/err" $? 2 "--rating-column 'Nope' is not used")" "$(cut -c1-110 "$work/err")"

# 14. profiles files and compile outputs, from compile and from submit
printf -- '- cpu\n- onprem\n' >"$work/list.yaml"
printf 'cpu: {gpu: [unclosed\n' >"$work/bad.yaml"
printf 'cpu: a CPU cluster\n' >"$work/string.yaml"
for file in list bad string; do
  name="compile-profiles-$file"
  "$PYTHON" -m pipelines compile --profile cpu --profiles-file "$work/$file.yaml" --output "$work/p.yaml" \
    >/dev/null 2>"$work/err"
  say "$name" "$(one_error "$work/err" $? 2 "$work/$file.yaml")" "$(cut -c1-110 "$work/err")"
  name="submit-profiles-$file"
  KFP_HOST=http://127.0.0.1:9 "$PYTHON" -m pipelines submit --profile cpu --profiles-file "$work/$file.yaml" \
    --package "$work/p.yaml" --data s3://b/r.csv >/dev/null 2>"$work/err"
  say "$name" "$(one_error "$work/err" $? 2 "$work/$file.yaml")" "$(cut -c1-110 "$work/err")"
done
name=compile-output-in-proc
"$PYTHON" -m pipelines compile --profile cpu --output /proc/x.yaml >/dev/null 2>"$work/err"
say "$name" "$(one_error "$work/err" $? 2 "/proc/x.yaml")" "$(cut -c1-110 "$work/err")"

# 16. submit without an endpoint, or with one without a scheme: bad input, exit 2
name=submit-no-host
env -u KFP_HOST "$PYTHON" -m pipelines submit --profile cpu --data s3://b/r.csv --package "$work/p.yaml" \
  >/dev/null 2>"$work/err"
say "$name" "$(one_error "$work/err" $? 2 "no KFP endpoint")" "$(cut -c1-110 "$work/err")"
name=submit-host-without-scheme
KFP_HOST=kubeflow.example.com "$PYTHON" -m pipelines submit --profile cpu --data s3://b/r.csv \
  --package "$work/p.yaml" >/dev/null 2>"$work/err"
say "$name" "$(one_error "$work/err" $? 2 "has no scheme")" "$(cut -c1-110 "$work/err")"

echo "$passed held, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
