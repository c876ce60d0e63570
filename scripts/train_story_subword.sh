#!/usr/bin/env bash
# The readable-stories model (docs/story.md): a corpus written by the llama2.c model stories260K
# (prompted with the words of our hashtag vocabularies), then a hashtag-conditioned subword LSTM
# trained on it together with ROCStories and PersonaBank, then the side-by-side evaluation.
# Needs ../shared (data and the stories260K development model). Writes runs/ (git-ignored).
# Usage: scripts/train_story_subword.sh [corpus|train|eval|all]
#   MB=25 (corpus size), MINUTES=60 (training budget), INIT=dir (continue from a checkpoint:
#   its vocabulary and keyword table are kept), VOCAB=2048, EMB=128, HIDDEN=256 (the model's
#   sizes), LR=2e-3, WARMUP=50, PB=8 and ROC=2 (the human corpora's weights beside the generated
#   one's 1), TOP_P (the nucleus the checkpoint recommends for sampling).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${HASHTALE_BIN:-${CARGO_TARGET_DIR:-target}/release/hashtale}
shared=../shared
corpus=runs/story-corpus/stories260k.txt
out=${OUT:-runs/story-subword}
step=${1:-all}
mkdir -p runs/story-corpus
if [ "$step" = corpus ] || [ "$step" = all ]; then
  # Resumable: a second run continues the file where the first stopped.
  "$bin" story-corpus --model "$shared/models/stories260K/stories260K.bin" \
    --words assets/tags/config.json --words assets/concepts/concepts.tsv \
    --words "$shared/data/harrison/vocab_index.txt" \
    --out "$corpus" --megabytes "${MB:-25}"
fi
if [ "$step" = train ] || [ "$step" = all ]; then
  extra=()
  if [ -n "${INIT:-}" ]; then extra=(--init "$INIT"); fi
  if [ -n "${TOP_P:-}" ]; then extra+=(--sampling-top-p "$TOP_P"); fi
  # PersonaBank first: its dev split picks the best checkpoint, as for the char models.
  "$bin" train story --conditioned --out "$out" --name story-subword \
    --corpus "$shared/data/stories/personabank.txt:${PB:-8}" \
    --corpus "$shared/data/stories/rocstories-cloze.txt:${ROC:-2}" \
    --corpus "$corpus:1" \
    --keyword-vocab assets/tags/config.json --keyword-vocab assets/concepts/concepts.tsv \
    --keyword-vocab "$shared/data/harrison/vocab_index.txt" \
    --subword-vocab "${VOCAB:-2048}" --emb "${EMB:-128}" --hidden "${HIDDEN:-256}" --layers 2 \
    --keyword-copy --bptt 64 --batch 32 \
    --lr "${LR:-2e-3}" --warmup-steps "${WARMUP:-50}" --min-lr-frac 0.05 --eval-every 400 \
    --time-budget-min "${MINUTES:-60}" --f16 "${extra[@]}"
fi
if [ "$step" = eval ] || [ "$step" = all ]; then
  "$bin" eval story --text "$shared/data/stories/personabank.txt" --split dev \
    --compare assets/story-plain --compare assets/story \
    --compare "$shared/models/stories260K/stories260K.bin" --compare "$out" \
    --generate 300 --json > runs/story-compare.json
  "$bin" eval story --text "$shared/data/stories/personabank.txt" --split dev \
    --compare assets/story-plain --compare assets/story \
    --compare "$shared/models/stories260K/stories260K.bin" --compare "$out" --generate 300
fi
