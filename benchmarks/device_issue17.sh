#!/usr/bin/env bash
# Issue 17's checks on a lent GPU, as one bounded script (the device tool's 10-minute command, 15 minutes of device
# time per session). Run from the repository root with the Omniglot files in shared/data/omniglot and easyfsl 1.5.0
# in .device/easyfsl (both carried, neither committed). Steps run in order of value, each under its own time
# limit; every result file written so far is packed into $OUT/results.tgz after each step, so a step cut short
# loses nothing before it. The GPU's own python3 (its PyTorch build) runs the source tree (PYTHONPATH=src).
set -u
OUT=${OUT:-/tmp/device-out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 ONESHOT_DATA=$PWD/shared/data ONESHOT_COMMIT=${ONESHOT_COMMIT:-unknown}
log=$OUT/device_log.txt
stamp=$(mktemp)
save() { find benchmarks/results -newer "$stamp" -type f -print0 | tar czf "$OUT/results.tgz" --null -T -; }
step() {
    local limit=$1
    shift
    echo "== $(date -u +%T) (limit ${limit}s) $*" | tee -a "$log"
    timeout "$limit" "$@" 2>&1 | tee -a "$log"
    echo "rc=${PIPESTATUS[0]}" | tee -a "$log"
    save
}
# The test-time adaptation steps chosen on validation (benchmarks/test_steps_val.py), scored on test for each
# shape whose choice differs from the row's current one; Lake's runs with the 20-way 1-shot choice.
rescore() {
    local name=$1 limit=$2
    python3 - "$name" >"$OUT/plan_$name.txt" <<'EOF'
import json, sys
name = sys.argv[1]
best = json.load(open(f"benchmarks/results/{name.removesuffix('_conv4_vinyals')}_test_steps_val.json"))["best_per_shape"]
row = json.load(open(f"benchmarks/results/{name}.json"))
for r in row["evaluation"]["results"]:
    key = f"{r['ways']}w{r['shots']}s"
    now = (r.get("options") or {}).get("test_steps", row["method_options"].get("test_steps"))
    if best.get(key) is not None and best[key] != now:
        print(f"{r['ways']}x{r['shots']} {best[key]} {'lake' if key == '20w1s' else 'nolake'}")
EOF
    cat "$OUT/plan_$name.txt" | tee -a "$log"
    while read -r shape steps lake; do
        extra=()
        [ "$lake" = nolake ] && extra=(--no-lake)
        step "$limit" python3 benchmarks/reevaluate.py --name "$name" --episodes 1000 --shapes "$shape" \
            --option "test_steps=$steps" --device cuda "${extra[@]}"
    done <"$OUT/plan_$name.txt"
}

nvidia-smi -L | tee -a "$log"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$log"
# 1. The whole-step CUDA graph gives the eager step's losses and weights (tests/test_step_graph.py, GPU tests).
step 90 python3 -m pytest -q -p no:cacheprovider tests/test_step_graph.py
# 2. Throughput against easyfsl on this GPU, the loop recording its whole step; levers (CUDA graphs of the
#    encoder alone, the whole step, ...) after the headline is written.
step 200 python3 benchmarks/throughput.py --device cuda --precision fp32 --compile step-graph --episodes 300 \
    --repeats 3 --levers 200 --easyfsl-path .device
# 3. MAML: test-time steps on validation, then test where the choice changed.
step 60 python3 benchmarks/test_steps_val.py --name maml_conv4_vinyals --values 1 2 3 5 8 12 --device cuda
rescore maml_conv4_vinyals 45
# 4. Reptile's stage-2 candidate: its 20-way shapes and Lake's runs on 1000 episodes (the whole support).
step 150 python3 benchmarks/reevaluate.py --name reptile_stage2_candidate --episodes 1000 --shapes 20x1 20x5 --device cuda
# 5. First-order MAML: more test-time steps (validation was still rising at 8).
step 45 python3 benchmarks/test_steps_val.py --name fomaml_conv4_vinyals --values 8 12 16 --device cuda
rescore fomaml_conv4_vinyals 40
echo "== $(date -u +%T) done" | tee -a "$log"
