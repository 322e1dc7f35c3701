#!/usr/bin/env bash
# make demo, on the local stack: a simulated day streamed through the deployed scorer.
# Usage: scripts/demo-local.sh DATA_DIR DATE   (after simulate, features and train)
set -euo pipefail
DATA=${1:?data dir}; DAY=${2:?day YYYY-MM-DD}
RTML=${RTML:-.venv/bin/rtml}
PY=${PY:-.venv/bin/python}
HALF=${DEMO_HALF:-4000}

json() { "$PY" -c "import json,sys; print(json.load(sys.stdin)[\"$1\"])"; }

"$RTML" local down >/dev/null 2>&1 || true
echo "== local stack up (synth, deploy on embedded moto, champion = xgboost)"
"$RTML" local up --detach --model "$DATA/artifacts/xgboost" --json > .rtml-up.json
trap '"$RTML" local down || true; rm -f .rtml-up.json' EXIT
eval "$("$RTML" local env)"
STATE_TABLE=$(json feature_state_table < .rtml-up.json)

echo "== the simulated dataset into the data bucket (the batch path's source)"
"$RTML" local upload --in "$DATA/simulated"

echo "== challenger (logistic regression) in shadow"
CHALLENGER=$("$RTML" models push "$DATA/artifacts/logistic_regression" --json | json version)
"$RTML" models promote fraud "$CHALLENGER" --alias challenger

echo "== feature state warmed in bulk as of the end of the day before $DAY"
AS_OF=$("$PY" -c "from datetime import datetime, timedelta; print((datetime.fromisoformat('$DAY') - timedelta(seconds=1)).isoformat())")
"$RTML" features materialize --in "$DATA/simulated" --as-of "$AS_OF" --table "$STATE_TABLE" --labels chargebacks

echo "== $DAY through Kinesis: the first $HALF records, and 7 poison records"
"$RTML" stream put --in "$DATA/simulated" --date "$DAY" --limit "$HALF" --poison 7 --wait

echo "== hot swap: the challenger becomes champion mid-stream (no redeploy)"
"$RTML" models promote fraud "$CHALLENGER" --alias champion

echo "== the rest of the day"
"$RTML" stream put --in "$DATA/simulated" --date "$DAY" --offset "$HALF"

echo "== the API: a sample of the next day's transactions scored on demand (half frauds)"
NEXT=$("$PY" -c "from datetime import date, timedelta; print(date.fromisoformat('$DAY') + timedelta(days=1))")
"$RTML" api predict --in "$DATA/simulated" --date "$NEXT" --sample 12

echo "== report (waits until the day is scored)"
"$RTML" local report --in "$DATA/simulated" --date "$DAY" --out .rtml/report.html
echo "logs: .rtml/logs/   report: .rtml/report.html"
