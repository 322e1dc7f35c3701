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
echo "== local stack up (synth, deploy on embedded moto, champion = XGBoost on the improved features)"
"$RTML" local up --detach --model "$DATA/artifacts/improved" --json > .rtml-up.json
trap '"$RTML" local down || true; rm -f .rtml-up.json' EXIT
eval "$("$RTML" local env)"
STATE_TABLE=$(json feature_state_table < .rtml-up.json)

echo "== the simulated dataset into the data bucket (the batch path's source)"
"$RTML" local upload --in "$DATA/simulated"

echo "== challenger in shadow: the previous best (the handbook's chapter 5 XGBoost, baseline features)"
CHALLENGER=$("$RTML" models push "$DATA/artifacts/xgboost_ch5" --json | json version)
"$RTML" models promote fraud "$CHALLENGER" --alias challenger

echo "== feature state warmed in bulk as of the end of the day before $DAY"
AS_OF=$("$PY" -c "from datetime import datetime, timedelta; print((datetime.fromisoformat('$DAY') - timedelta(seconds=1)).isoformat())")
"$RTML" features materialize --in "$DATA/simulated" --as-of "$AS_OF" --table "$STATE_TABLE" --labels chargebacks

echo "== $DAY through Kinesis: the first $HALF records, and 7 poison records"
"$RTML" stream put --in "$DATA/simulated" --date "$DAY" --limit "$HALF" --poison 7 --wait

echo "== hot swap: the challenger becomes champion mid-stream (no redeploy)"
"$RTML" models promote fraud "$CHALLENGER" --alias champion

echo "== the rest of the day"
"$RTML" stream put --in "$DATA/simulated" --date "$DAY" --offset "$HALF" --wait

echo "== rollback: the improved model is champion again, the previous best stays in shadow"
"$RTML" models rollback fraud --alias champion

echo "== the API: a sample of the next day's transactions scored on demand (half frauds)"
NEXT=$("$PY" -c "from datetime import date, timedelta; print(date.fromisoformat('$DAY') + timedelta(days=1))")
"$RTML" api predict --in "$DATA/simulated" --date "$NEXT" --sample 12

WEEK_BEFORE=$("$PY" -c "from datetime import date, timedelta; print(date.fromisoformat('$DAY') - timedelta(days=7))")
echo "== batch: the deployed Step Functions machine scores $WEEK_BEFORE, then $DAY (whose run"
echo "   also evaluates $WEEK_BEFORE, whose labels are known a week later)"
"$RTML" batch run --date "$WEEK_BEFORE" --json > /dev/null
"$RTML" batch run --date "$DAY" --json > .rtml/batch-manifest.json
"$PY" - <<'PY'
import json
m = json.load(open(".rtml/batch-manifest.json"))
t = m["timings_seconds"]
print(f"run {m['run_id']}: {m['outputs']['rows']} rows scored, {m['high_risk']} high risk,"
      f" max PSI {m['max_psi']:.3f}, drift alarms {m['drift_alarms'] or 'none'}")
print("tasks per stage: " + ", ".join(f"{k} {v['tasks']} ({v['seconds']:.1f} s)"
                                      for k, v in t.items() if isinstance(v, dict)))
if m["labelled_day"]:
    d = m["labelled_day"]
    print(f"labelled day {d['day']}: AUC {d['auc_roc']:.3f} AP {d['average_precision']:.3f}"
          f" CP@100 {d['card_precision_at_100']:.3f}")
PY

echo "== monitoring: the deployed schedule fires the monitor job for $DAY (rtml local tick)"
NEXT_MORNING="$NEXT"T03:45
"$RTML" local tick --at "$NEXT_MORNING" --json > .rtml/monitor-tick.json
"$PY" - <<'PY'
import json
fired = json.load(open(".rtml/monitor-tick.json"))["fired"]
for f in fired:
    result = f["result"]["payload"] if isinstance(f["result"], dict) else f["result"]
    if isinstance(result, dict) and "alarms" in result:
        fired_kinds = [k for k, n in result["alarms"].items() if n]
        print(f"monitor {result['day']}: alarms {fired_kinds or 'none'}; report {result['report']}")
PY

echo "== report (waits until the day is scored)"
"$RTML" local report --in "$DATA/simulated" --date "$DAY" --out .rtml/report.html
echo "logs: .rtml/logs/   report: .rtml/report.html"
