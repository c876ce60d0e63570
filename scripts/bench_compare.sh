#!/usr/bin/env bash
# hashtale's model stages against PyTorch with the same weights and shapes, in one run, as
# ratios (docs/performance.md). Not a test: it prints a table.
#
#   scripts/bench_compare.sh                      # 2 threads, target/release/hashtale
#   THREADS=1 HASHTALE_BIN=path/to/hashtale scripts/bench_compare.sh
#   OLD_BIN=/tmp/hashtale-before scripts/bench_compare.sh   # also a binary to compare against
#
# PyTorch comes from PyPI into a venv ($VENV, default /var/tmp/hashtale-torch-venv); nothing
# here is a test dependency.
set -euo pipefail
cd "$(dirname "$0")/.."

THREADS="${THREADS:-2}"
BIN="${HASHTALE_BIN:-${CARGO_TARGET_DIR:-target}/release/hashtale}"
VENV="${VENV:-/var/tmp/hashtale-torch-venv}"

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import torch, safetensors, PIL' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q torch safetensors numpy pillow
fi

export RAYON_NUM_THREADS="$THREADS" OMP_NUM_THREADS="$THREADS"
out="$(mktemp -d)"
"$VENV/bin/python" scripts/bench_reference.py --threads "$THREADS" > "$out/torch.json"
"$BIN" bench stages > "$out/ours.json"
if [ -n "${OLD_BIN:-}" ]; then
  "$OLD_BIN" bench model --batch-sizes 8,1 > "$out/old.txt"
  if [ -z "${SKIP_OLD_TAGS:-}" ]; then
    "$OLD_BIN" bench model --batch-sizes 8 --no-story | sed 's/^batch/tags batch/' >> "$out/old.txt"
  fi
fi

python3 - "$out" <<'EOF'
import json, re, sys, os
d = sys.argv[1]
t = json.load(open(os.path.join(d, "torch.json")))
o = json.load(open(os.path.join(d, "ours.json")))
old = {}
p = os.path.join(d, "old.txt")
if os.path.exists(p):
    for line in open(p):
        m = re.match(r"(tags )?batch\s+(\d+): ([\d.]+) images/s", line)
        if m:
            old[("tags_" if m.group(1) else "model_") + f"b{m.group(2)}"] = float(m.group(3))
print(f"threads {o['threads']}, {t['engine']}")
print("| stage | hashtale | PyTorch (same run) | ratio | before (same run) | ratio |")
print("|---|---|---|---|---|---|")
rows = [
    ("decode + resize to 224, images/s", "decode_images_per_s", None),
    ("EfficientNet-Lite0 features incl. decode + resize, batch 8, images/s", "encoder_images_per_s", None),
    ("story char-LSTM, 500 chars, batch 8, chars/s", "story_b8_chars_per_s", "story_b8_tensor_chars_per_s"),
    ("story char-LSTM, 500 chars, batch 64, chars/s", "story_b64_chars_per_s", "story_b64_tensor_chars_per_s"),
    ("whole model step, batch 8, images/s", "model_b8_images_per_s", "old:model_b8"),
    ("whole model step, batch 1, images/s", "model_b1_images_per_s", "old:model_b1"),
    ("whole model step, 4 batches of 8 in flight (the worker's default), images/s", "model_b8_x4_images_per_s", "old:model_b8"),
    ("tags only (no story), batch 8, images/s", "tags_b8_images_per_s", "old:tags_b8"),
]
for name, key, before in rows:
    ours = o[key]
    ref = t.get(key)
    ref_s = f"{ref:,.1f}" if ref else "–"
    ratio = f"{ours / ref:.2f}×" if ref else "–"
    b = None
    if before and before.startswith("old:"):
        b = old.get(before[4:])
    elif before:
        b = o.get(before)
    b_s = f"{b:,.1f}" if b else "–"
    b_ratio = f"{ours / b:.2f}×" if b else "–"
    print(f"| {name} | {ours:,.1f} | {ref_s} | {ratio} | {b_s} | {b_ratio} |")
EOF
