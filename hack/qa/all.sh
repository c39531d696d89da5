#!/usr/bin/env bash
# Every QA script of hack/qa/ (issue 19's cases as a user meets them), one after the other:
#   bash hack/qa/all.sh                (from the repository root; PYTHON defaults to .venv/bin/python)
# Exits non-zero if any script had a case that did not hold.
set -uo pipefail
cd "$(dirname "$0")/../.."
status=0
for script in hack/qa/*.sh; do
  [ "$script" = hack/qa/all.sh ] && continue
  echo "== $script"
  bash "$script" || status=1
done
exit "$status"
