#!/usr/bin/env bash
# Trains the hashtag-conditioned story model shipped in assets/story: a checkpoint's weights
# (INIT, by default the plain model in assets/story-plain) fine-tuned on keyword-prefixed stories,
# reading the keywords also as a vector at every step (KEYWORD_DIM; 0 for the prefix line only).
# Needs ../shared/data. Writes runs/story-cond (best checkpoint) and runs/story-cond/last; copy
# the best one to assets/story.
set -euo pipefail
cd "$(dirname "$0")/.."
BUDGET_MIN="${BUDGET_MIN:-40}"
INIT="${INIT:-assets/story-plain}"
KEYWORD_DIM="${KEYWORD_DIM:-64}"
OUT="${OUT:-runs/story-cond}"
cargo run --release -- train story --conditioned \
  --init "$INIT" \
  --out "$OUT" \
  --keyword-vocab assets/tags/config.json \
  --keyword-vocab ../shared/data/harrison/vocab_index.txt \
  --keyword-dim "$KEYWORD_DIM" \
  --lr 1e-3 --warmup-steps 10 --min-lr-frac 0.05 --seed "${SEED:-44}" \
  --name story-cond --time-budget-min "$BUDGET_MIN" --eval-every 100 --f16
