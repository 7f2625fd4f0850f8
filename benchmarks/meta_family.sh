#!/usr/bin/env bash
# Train and evaluate the meta-learning and memory family (issue 4) under one documented configuration each:
# Conv-4 on the Vinyals split, training episodes 5-way 1-shot 5 queries (20-way for the memory learner),
# Adam at --lr (the meta learning rate), validation (20-way 1-shot, VAL_EPISODES episodes) every EVAL_EVERY (250) meta-steps
# keeping the best checkpoint, a wall-clock training budget of MINUTES per method (validation excluded), then
# the standard test protocol at TEST_EPISODES episodes per shape (seed 0) and Lake's 20 runs. Adapting methods
# are evaluated episode by episode, so the test-episode count is lowered from 1000 to fit a CPU budget.
# Writes benchmarks/results/<name>.json and copies each best checkpoint to models/<name>.safetensors.
# Usage: benchmarks/meta_family.sh [MINUTES] [METHOD...]   (env: TEST_EPISODES=200 VAL_EPISODES=100 EVAL_EVERY=250 PYTHON=python)
#
# CPU budget documented in docs/methods.md: MINUTES=3 training per method on a 2-core CPU, TEST_EPISODES=100,
# VAL_EPISODES=100 (PYTHON=.venv/bin/python TEST_EPISODES=100 benchmarks/meta_family.sh 3): about 39 minutes
# of wall time for all four methods, evaluation included (measured with other jobs sharing the CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-3}
shift || true
METHODS=${*:-maml fomaml reptile memory}
PY=${PYTHON:-python}
TEST_EPISODES=${TEST_EPISODES:-200}
VAL_EPISODES=${VAL_EPISODES:-100}
EVAL_EVERY=${EVAL_EVERY:-250}
COMMON=(--episodes 100000 --lr-step 100000 --eval-every "$EVAL_EVERY" --val-episodes "$VAL_EPISODES" --test-episodes "$TEST_EPISODES" --max-minutes "$MINUTES")
for m in $METHODS; do
  case $m in
    # Finn et al. 5-way Omniglot: 1 inner step of 0.4, meta lr 1e-3, 3 test steps (meta-batch 4 instead of 32 for the CPU).
    maml)    $PY benchmarks/train_and_evaluate.py --name maml_conv4_vinyals --method maml --ways 5 --shots 1 --queries 5 --lr 1e-3 --option meta_batch=4 --option inner_steps=1 --option inner_lr=0.4 --option test_steps=3 "${COMMON[@]}" ;;
    fomaml)  $PY benchmarks/train_and_evaluate.py --name fomaml_conv4_vinyals --method fomaml --ways 5 --shots 1 --queries 5 --lr 1e-3 --option meta_batch=4 --option inner_steps=1 --option inner_lr=0.4 --option test_steps=3 "${COMMON[@]}" ;;
    # Nichol et al. Omniglot: 5 inner Adam steps (beta1 = 0) of 1e-3, meta-batch 5; (theta - phi) fed to the loop's Adam.
    # 20 test steps instead of their 50: evaluation adapts on every episode, and 50 steps do not fit the CPU budget.
    reptile) $PY benchmarks/train_and_evaluate.py --name reptile_conv4_vinyals --method reptile --ways 5 --shots 1 --queries 5 --lr 1e-3 --option meta_batch=5 --option inner_steps=5 --option test_steps=20 "${COMMON[@]}" ;;
    # Kaiser et al.: memory loss with margin 0.1, k = 256; episodic training 20-way 1-shot 5 queries.
    memory)  $PY benchmarks/train_and_evaluate.py --name memory_conv4_vinyals --method memory --ways 20 --shots 1 --queries 5 --lr 1e-3 "${COMMON[@]}" ;;
    *) echo "unknown method $m" >&2; exit 2 ;;
  esac
done
