#!/usr/bin/env bash
# Trains the hashtag-conditioned story model shipped in assets/story: the plain model's weights
# (assets/story-plain) fine-tuned on keyword-prefixed stories. Needs ../shared/data. Writes
# runs/story-cond (best checkpoint) and runs/story-cond/last; copy the best one to assets/story.
set -euo pipefail
cd "$(dirname "$0")/.."
BUDGET_MIN="${BUDGET_MIN:-40}"
cargo run --release -- train story --conditioned \
  --init assets/story-plain \
  --out runs/story-cond \
  --keyword-vocab assets/tags/config.json \
  --keyword-vocab ../shared/data/harrison/vocab_index.txt \
  --lr 1e-3 --warmup-steps 10 --min-lr-frac 0.05 --seed 44 \
  --name story-cond --time-budget-min "$BUDGET_MIN" --eval-every 100 --f16
