#!/usr/bin/env bash
# Trains the shipped hashtag decoder: attention over the union of Flickr8k and Corel5k train with
# one merged vocabulary, for one encoder (ENCODER=lite0|lite2), then evaluates it on each dev set
# and on imagenet-sample, decoder only, concepts only, probe only and fused (docs/tags.md), after
# training the linear probe beside the decoder and fitting the fusion weights with the
# object-photo gate (both written into the model's directory).
# Needs ../shared/data. Writes runs/ (git-ignored).
# Usage: ENCODER=lite0 EPOCHS=8 scripts/train_tag_union.sh [train|probe|tune|eval|all]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${HASHTALE_BIN:-target/release/hashtale}
encoder=${ENCODER:-lite0}
epochs=${EPOCHS:-8}
out=runs/attention-union-$encoder
data=../shared/data
step=${1:-all}
if [ "$step" = train ] || [ "$step" = all ]; then
  "$bin" train tags --data "$data/flickr8k" --data "$data/corel5k" --encoder "$encoder" \
    --kind attention --out "$out" --epochs "$epochs" --patience 2 --half
fi
if [ "$step" = probe ] || [ "$step" = all ]; then
  "$bin" train probe --model "$out" --data "$data/flickr8k" --data "$data/corel5k" \
    --mixture --loss bce --lr 3e-4 --weight-decay 0.3 --out "$out" --half
fi
if [ "$step" = tune ] || [ "$step" = all ]; then
  "$bin" tune fusion --model "$out" --gate --data "$data/flickr8k" --data "$data/corel5k" \
    --data "$data/imagenet-sample" --out "$out/fusion.json"
fi
if [ "$step" = eval ] || [ "$step" = all ]; then
  for ds in flickr8k corel5k imagenet-sample; do
    for source in decoder concepts probe fused; do
      "$bin" eval tags --data "$data/$ds" --model "$out" --encoder "$encoder" --source "$source" \
        --json > "runs/$source-$encoder-$ds.json"
    done
  done
fi
