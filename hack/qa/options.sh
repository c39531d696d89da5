#!/usr/bin/env bash
# QA of issue 19's bad-input cases (items 9-12, 15, and the model server's item 11), as a user meets them:
# each runs the real CLI (`python -m pipelines run`, `python -m serving`) and must exit 2 with exactly one
# `error:` line on stderr that says the given words, within the time limit (every case fails before any
# step runs, so seconds), and leave no run directory behind.
#
#   bash hack/qa/options.sh            (from the repository root; PYTHON defaults to .venv/bin/python)
#   CASE_TIMEOUT=120                   seconds per case before it counts as "ran past the checks"
set -uo pipefail

PYTHON="${PYTHON:-.venv/bin/python}"
CASE_TIMEOUT="${CASE_TIMEOUT:-120}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export MLFLOW_TRACKING_URI="sqlite:///$work/mlflow.db"   # no case may touch the user's own store
passed=0
failed=0

# check NAME WORDS -- COMMAND...: run COMMAND; exit 2, one stderr line "error: ...WORDS...", no $work/run.
check() {
  local name="$1" words="$2"
  shift 3
  rm -rf "$work/run"
  local started=$SECONDS
  timeout "$CASE_TIMEOUT" "$@" >"$work/out" 2>"$work/err"
  local code=$? lines
  lines=$(wc -l <"$work/err")
  local why=""
  if [ "$code" -ne 2 ]; then why="exit $code, not 2"
  elif [ "$lines" -ne 1 ]; then why="$lines lines on stderr, not 1"
  elif ! head -c 6 "$work/err" | grep -q '^error:'; then why="stderr does not start with 'error:'"
  elif ! grep -qF -- "$words" "$work/err"; then why="the error line does not say: $words"
  elif [ -e "$work/run" ]; then why="it wrote $work/run"
  fi
  if [ -z "$why" ]; then
    passed=$((passed + 1))
    printf 'held    %-28s %3ss  %s\n' "$name" "$((SECONDS - started))" "$(cut -c1-150 "$work/err")"
  else
    failed=$((failed + 1))
    printf 'FAILED  %-28s %3ss  %s\n' "$name" "$((SECONDS - started))" "$why"
    sed 's/^/        | /' "$work/err" | tail -5
  fi
}

run=("$PYTHON" -m pipelines run --output "$work/run")

# 9. a SQLite study database where no file can be made (/proc takes none, even from root)
check study-storage-unwritable "--study-storage 'sqlite:////proc/study.db'" -- \
  "${run[@]}" --tuning-trials 2 --study-storage sqlite:////proc/study.db
# 10. an MLflow SQLite store there (os.access says yes to root)
check mlflow-sqlite-unwritable "MLflow database sqlite:////proc/mlflow.db cannot be written" -- \
  "${run[@]}" --mlflow-tracking-uri sqlite:////proc/mlflow.db
# 11. more tokens than the bundled 512-position MiniLM takes
check max-seq-length-600 "--max-seq-length 600 is more than the bundled MiniLM takes: 512" -- "${run[@]}" --max-seq-length 600
check max-seq-length-100000 "use at most 512" -- "${run[@]}" --max-seq-length 100000
# 12. KServe from a local run (its model is a path on this machine)
check kserve-from-a-local-run "--deploy-backend kserve cannot deploy from a local run" -- \
  "${run[@]}" --deploy-backend kserve
# 15. a FIFO; a semicolon file whose rows do not fit its header
mkfifo "$work/fifo.csv"
check data-fifo "is not a regular file (a named pipe (FIFO))" -- "${run[@]}" --data "$work/fifo.csv"
printf 'Review Text;Rating;Class Name\nnice;5;Dresses\nbad;1;Knits;extra\n' >"$work/ragged.csv"
check data-ragged-semicolons "read as semicolon-separated (detected" -- "${run[@]}" --data "$work/ragged.csv"
# 11. the model server: the same limit, before the port is bound or the weights load
model_dir="$("$PYTHON" -c 'from components.common.modeling import bundled_model_path as p; print(p())')"
check serve-max-seq-length-600 "--max-seq-length 600 is more than model" -- \
  "$PYTHON" -m serving --model-dir "$model_dir" --max-seq-length 600  # checked before the port is bound

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
