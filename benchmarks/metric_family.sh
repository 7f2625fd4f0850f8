#!/usr/bin/env bash
# Train and evaluate the metric-learning family (issue 3) under one documented configuration each:
# Conv-4 on the Vinyals split, Adam 1e-3 halved every 1000 episodes, validation (20-way 1-shot, 500 episodes)
# every 500 episodes keeping the best checkpoint, a wall-clock training budget of MINUTES per method (CPU
# runs; validation excluded), then the standard test protocol (1000 episodes per shape, seed 0), Lake's 20
# runs and verification metrics on 20000 seeded test pairs. Writes benchmarks/results/<name>.json and copies
# each best checkpoint to models/<name>.safetensors. Usage: benchmarks/metric_family.sh [MINUTES] [METHOD...]
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-6}
shift || true
METHODS=${*:-siamese contrastive triplet matching baseline}
PY=${PYTHON:-python}
COMMON=(--episodes 20000 --lr-step 1000 --eval-every 500 --val-episodes 500 --max-minutes "$MINUTES" --verification)
for m in $METHODS; do
  case $m in
    # Pairs: 60 classes x 4 examples -> 360 same-class and 360 different-class pairs per batch.
    siamese)     $PY benchmarks/train_and_evaluate.py --name siamese_conv4_vinyals --method siamese --ways 60 --shots 2 --queries 2 "${COMMON[@]}" ;;
    contrastive) $PY benchmarks/train_and_evaluate.py --name contrastive_conv4_vinyals --method contrastive --ways 60 --shots 2 --queries 2 --option margin=1.0 "${COMMON[@]}" ;;
    # P x K = 60 x 5 batches, FaceNet's semi-hard mining and margin 0.2.
    triplet)     $PY benchmarks/train_and_evaluate.py --name triplet_conv4_vinyals --method triplet --ways 60 --shots 5 --queries 0 --option mining=semihard --option margin=0.2 "${COMMON[@]}" ;;
    # 20-way 1-shot, 5 queries per class. Cosine scale 40 (the paper's is 1): chosen on the validation split over
    # 10, 20, 30 and 40 (benchmarks/results/matching_scale_candidates.json; docs/methods.md).
    matching)    $PY benchmarks/train_and_evaluate.py --name matching_conv4_vinyals --method matching --ways 20 --shots 1 --queries 5 --option scale=40 "${COMMON[@]}" ;;
    matching-fce) $PY benchmarks/train_and_evaluate.py --name matching_fce_conv4_vinyals --method matching --ways 20 --shots 1 --queries 5 --option fce=true --option scale=10 "${COMMON[@]}" ;;
    # Class-balanced batches of 60 classes x 6 images for the 4800-class classifier; one-shot rules compared on val.
    baseline)    $PY benchmarks/train_and_evaluate.py --name baseline_conv4_vinyals --method baseline --ways 60 --shots 1 --queries 5 --variant test_time=cosine --variant test_time=finetune "${COMMON[@]}" ;;
    *) echo "unknown method $m" >&2; exit 2 ;;
  esac
done
