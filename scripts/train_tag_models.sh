#!/usr/bin/env bash
# Trains and evaluates the hashtag models of docs/tags.md: three models × two datasets, plus the
# frequency prior. Needs ../shared/data (Flickr8k, Corel5k). Writes to runs/ (git-ignored).
# Usage: scripts/train_tag_models.sh [flickr8k|corel5k]...
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${HASHTALE_BIN:-target/release/hashtale}
epochs=${EPOCHS:-12}
[ $# -gt 0 ] || set -- flickr8k corel5k
for ds in "$@"; do
  data=../shared/data/$ds
  for kind in attention show-tell multi-label; do
    "$bin" train tags --data "$data" --kind "$kind" --out "runs/$kind-$ds" --epochs "$epochs" --patience 2
    "$bin" eval tags --data "$data" --model "runs/$kind-$ds" --json > "runs/$kind-$ds.json"
  done
  "$bin" eval tags --data "$data" --prior --json > "runs/prior-$ds.json"
done
