#!/usr/bin/env bash
# Reproduces the results table (BENCHMARKS.md §12c) on the Grocery Store dataset: every configuration on
# 3 class folds (class-disjoint) and 3 image splits (in-domain), mean ± sd, with re-ranking.
# Usage: scripts/grocery_experiments.sh [GROCERY_DIR] [OUT_DIR]
set -euo pipefail
G=${1:-../shared/data/grocery_store}
OUT=${2:-runs/experiments}
export ESM_PROGRESS=0
R="python scripts/experiments.py $G --out $OUT"
# the default on both protocols, 2 seeds per class fold
nice -n 10 $R --config default --seeds 0 1
# one change each (kept or dropped by the mean over folds), seed 0
nice -n 10 $R --config mlp --config head-reg1 --config no-refit --config gem --config raw-gem \
  --config raw-lite1 --config lite1 --config raw-lite2 --config lite2 --seeds 0
# fine-tuning the last two blocks on cached early activations
nice -n 10 $R --config ft2 --seeds 0 --rerank none --rerank qe10 --rerank dba10+qe10
