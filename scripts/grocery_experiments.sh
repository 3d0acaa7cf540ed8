#!/usr/bin/env bash
# Reproduces the README's metric-learning table on the Grocery Store dataset.
# Usage: scripts/grocery_experiments.sh [GROCERY_DIR] [OUT_DIR]
# Both protocols; every loss; baselines with the same evaluation code path.
set -euo pipefail
G=${1:-../shared/data/grocery_store}
OUT=${2:-runs/grocery}
mkdir -p "$OUT"
export ESM_PROGRESS=0
for P in in-domain class-disjoint; do
  [ -d "$OUT/$P/test" ] || esm split "$G" --out "$OUT/$P" --protocol "$P" --exclude iconic --seed 0
  for B in color-histogram efficientnet-lite0; do
    /usr/bin/time -f "%e" -o "$OUT/$P-baseline-$B.time" \
      esm evaluate "$OUT/$P/test" --baseline "$B" --json > "$OUT/$P-baseline-$B.json"
  done
  # loss:head pairs; frozen EfficientNet-Lite0 features, early stopping on validation MAP@R
  # (validation drawn with the same protocol), then the head is refit on train + validation
  for LH in ${RUNS:-mahalanobis:linear triplet:linear triplet:mlp multi-similarity:linear multi-similarity:mlp contrastive:linear contrastive:mlp}; do
    L=${LH%%:*}; H=${LH##*:}; N="$L-$H"
    esm train "$OUT/$P/train" --out "$OUT/$P-$N.pt" --loss "$L" --head "$H" --protocol "$P" \
      --epochs "${EPOCHS:-60}" --patience 8 --seed 0 --refit ${TRAIN_ARGS:-} --json > "$OUT/$P-$N.card.json"
    esm evaluate "$OUT/$P/test" --model "$OUT/$P-$N.pt" --json > "$OUT/$P-$N.json"
  done
done
python scripts/results_table.py "$OUT"
