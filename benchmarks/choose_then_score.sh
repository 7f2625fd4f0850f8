#!/bin/bash
# Choose an adapting row's test-time setting per shape on validation, then score only the chosen one on test.
#
# usage: benchmarks/choose_then_score.sh NAME DEVICE VAL_EPISODES TEST_EPISODES [-- SWEEP ...] [-- SWEEP ...]
#   NAME           a results file benchmarks/results/NAME.json (its checkpoint is scored)
#   DEVICE         cpu, cuda or auto
#   SWEEP          arguments for one benchmarks/test_steps_val.py invocation (--values ... [--option K=V] [--shapes ...]);
#                  each runs on the validation split and adds its rows to NAME's *_test_steps_val.json
#   TEST_SHAPES    (environment) the shapes to score on test, default "20x1 20x5 5x5 5x1"
#   OUT            (environment) a folder that gets a copy of both files after every step (a lent GPU's $OUT)
#
# After the sweeps, each shape's setting is the one test_steps_val.py's rule chose (best_per_shape: the best
# validation accuracy, ties of 0.1 points to the fewer steps); benchmarks/reevaluate.py then scores that shape on
# TEST_EPISODES test episodes and writes it into NAME.json. The test split is read only after every sweep ended.
#
# Example (the MAML stage-3 candidate of issue 17, on an H200):
#   benchmarks/choose_then_score.sh maml_stage3_candidate cuda 200 1000 -- --values 1 2 3 5 8 12 \
#       -- --values 2 4 8 --option inner_lr=0.1 -- --values 2 4 --option inner_lr=0.2
set -u
name=$1; dev=$2; val_episodes=$3; test_episodes=$4; shift 4
[ "${1:-}" = "--" ] && shift
out=${OUT:-}
vfile=benchmarks/results/${name%_conv4_vinyals}_test_steps_val.json
keep() { [ -n "$out" ] && mkdir -p "$out" && cp "$@" "$out"/ 2>/dev/null; return 0; }
group=()
sweep() {
    if [ ${#group[@]} -gt 0 ]; then
        python3 benchmarks/test_steps_val.py --name "$name" --device "$dev" --episodes "$val_episodes" "${group[@]}" || exit 1
        keep "$vfile"
    fi
    group=()
}
for a in "$@"; do if [ "$a" = "--" ]; then sweep; else group+=("$a"); fi; done
sweep
for shape in ${TEST_SHAPES:-20x1 20x5 5x5 5x1}; do
    setting=$(python3 - "$vfile" "$shape" <<'PY'
import json, sys
chosen = json.load(open(sys.argv[1]))["best_per_shape"][sys.argv[2].replace("x", "w") + "s"]
items = chosen.items() if isinstance(chosen, dict) else [("test_steps", chosen)]
print(" ".join(f"--option {k}={v}" for k, v in items))
PY
) || { echo "no choice for $shape in $vfile: run a sweep that covers it" >&2; exit 1; }
    echo "test $shape with $setting"
    # shellcheck disable=SC2086  # $setting is a list of --option arguments
    python3 benchmarks/reevaluate.py --name "$name" --episodes "$test_episodes" --shapes "$shape" --no-lake --device "$dev" $setting || exit 1
    keep "benchmarks/results/$name.json"
done
