#!/usr/bin/env python3
"""PyTorch reference timings for hashtale's model stages, with the same weights and shapes.

Run by scripts/bench_compare.sh (which makes the venv with torch from PyPI); never by the tests.
Prints one JSON object: images/s or chars/s per stage, the same keys `hashtale bench stages
--json` prints, so the two can be divided.

Stages:
- decode: the sample files decoded and squashed to 224x224 RGB (PIL, bilinear).
- encoder: decode + squash + EfficientNet-Lite0 features (our safetensors weights, NCHW,
  TF "SAME" padding, BatchNorm in eval mode), batch 8.
- story_b8 / story_b64: the plain char-LSTM (assets/story-plain: emb 64, 2x384, 84 symbols) as
  nn.LSTM stepped one character at a time, softmax at temperature 0.8 and torch.multinomial,
  500 characters after a 2-character prompt, batch 8 and 64.
"""
import argparse
import io
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGE_STRIDES = [1, 2, 2, 2, 1, 2, 1]


def same_pad(x, k, s):
    """TF "SAME" padding (the extra pixel after), as hashtale's layers do."""
    h, w = x.shape[-2:]
    def amount(n):
        out = -(-n // s)
        total = max((out - 1) * s + k - n, 0)
        return total // 2, total - total // 2
    t, b = amount(h)
    l, r = amount(w)
    return F.pad(x, (l, r, t, b))


class ConvBn(nn.Module):
    def __init__(self, w, bn, stride, groups=1):
        super().__init__()
        cout, cin_g, k, _ = w.shape
        self.conv = nn.Conv2d(cin_g * groups, cout, k, stride, 0, groups=groups, bias=False)
        self.conv.weight.data.copy_(w)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(self.bn, name).data.copy_(bn[name])
        self.k, self.s = k, stride

    def forward(self, x):
        if self.k > 1:
            x = same_pad(x, self.k, self.s)
        return self.bn(self.conv(x))


class Lite(nn.Module):
    """EfficientNet-Lite built from the checkpoint's keys (no squeeze-excitation, ReLU6)."""

    def __init__(self, sd):
        super().__init__()
        def bn(prefix):
            return {n: sd[f"{prefix}.{n}"] for n in ("weight", "bias", "running_mean", "running_var")}
        self.stem = ConvBn(sd["_conv_stem.weight"], bn("_bn0"), 2)
        self.blocks = nn.ModuleList()
        cin, stage, prev, i = 32, 0, 32, 0
        while f"_blocks.{i}._project_conv.weight" in sd:
            p = f"_blocks.{i}"
            cout = sd[f"{p}._project_conv.weight"].shape[0]
            starts = i == 0 or cout != prev
            if starts and i > 0:
                stage += 1
            stride = STAGE_STRIDES[stage] if starts else 1
            blk = nn.Module()
            blk.expand = ConvBn(sd[f"{p}._expand_conv.weight"], bn(f"{p}._bn0"), 1) \
                if f"{p}._expand_conv.weight" in sd else None
            dw = sd[f"{p}._depthwise_conv.weight"]
            blk.dw = ConvBn(dw, bn(f"{p}._bn1"), stride, groups=dw.shape[0])
            blk.project = ConvBn(sd[f"{p}._project_conv.weight"], bn(f"{p}._bn2"), 1)
            blk.residual = stride == 1 and cin == cout
            self.blocks.append(blk)
            cin, prev, i = cout, cout, i + 1
        self.head = ConvBn(sd["_conv_head.weight"], bn("_bn1"), 1)

    def forward(self, x):
        x = F.relu6(self.stem(x))
        for b in self.blocks:
            h = x
            if b.expand is not None:
                h = F.relu6(b.expand(h))
            h = F.relu6(b.dw(h))
            h = b.project(h)
            x = h + x if b.residual else h
        return F.relu6(self.head(x))


def decode(data, size=224):
    img = Image.open(io.BytesIO(data)).convert("RGB").resize((size, size), Image.BILINEAR)
    return (np.asarray(img, dtype=np.float32) - 127.0) / 128.0


def bench_decode(files, n):
    t = time.perf_counter()
    for i in range(n):
        decode(files[i % len(files)])
    return n / (time.perf_counter() - t)


def bench_encoder(files, n, batch):
    sd = {k: v.float() for k, v in load_file(os.path.join(ROOT, "assets/encoder/efficientnet-lite0.safetensors")).items()}
    model = Lite(sd).eval()
    def run(count):
        for start in range(0, count, batch):
            arrs = [decode(files[(start + j) % len(files)]) for j in range(batch)]
            x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous()
            feats = model(x)
            feats.mean((2, 3))
    with torch.inference_mode():
        run(batch)  # warm-up
        t = time.perf_counter()
        run(n)
        return n / (time.perf_counter() - t)


def story_model():
    sd = {k: v.float() for k, v in load_file(os.path.join(ROOT, "assets/story-plain/model.safetensors")).items()}
    cfg = json.load(open(os.path.join(ROOT, "assets/story-plain/config.json")))["model"]
    v, e, h, layers = cfg["vocab"], cfg["emb"], cfg["hidden"], cfg["layers"]
    emb = nn.Embedding(v, e)
    emb.weight.data.copy_(sd["embed.weight"])
    lstm = nn.LSTM(e, h, layers)
    # Our cells keep W as (in, 4H) with gates i, f, g, o (PyTorch's order) and one bias.
    for l in range(layers):
        getattr(lstm, f"weight_ih_l{l}").data.copy_(sd[f"lstm{l}.w_x"].t())
        getattr(lstm, f"weight_hh_l{l}").data.copy_(sd[f"lstm{l}.w_h"].t())
        getattr(lstm, f"bias_ih_l{l}").data.copy_(sd[f"lstm{l}.b"])
        getattr(lstm, f"bias_hh_l{l}").data.zero_()
    out = nn.Linear(h, v)
    out.weight.data.copy_(sd["out.weight"])
    out.bias.data.copy_(sd["out.bias"])
    return emb, lstm, out, h, layers


def bench_story(batch, chars, temperature=0.8):
    emb, lstm, out, h, layers = story_model()
    torch.manual_seed(7)
    with torch.inference_mode():
        state = (torch.zeros(layers, batch, h), torch.zeros(layers, batch, h))
        x = torch.zeros(batch, dtype=torch.long)  # the prompt: a document start
        t = time.perf_counter()
        for _ in range(2 + chars):
            y, state = lstm(emb(x)[None], state)
            probs = F.softmax(out(y[0]) / temperature, dim=-1)
            x = torch.multinomial(probs, 1)[:, 0]
        return batch * chars / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--chars", type=int, default=500)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    sample_dir = os.path.join(ROOT, "assets/samples")
    files = [open(os.path.join(sample_dir, f), "rb").read()
             for f in sorted(os.listdir(sample_dir)) if f.lower().endswith((".png", ".jpg", ".jpeg"))]
    result = {
        "engine": f"pytorch {torch.__version__}",
        "threads": a.threads,
        "decode_images_per_s": bench_decode(files, a.images),
        "encoder_images_per_s": bench_encoder(files, a.images, 8),
        "story_b8_chars_per_s": bench_story(8, a.chars),
        "story_b64_chars_per_s": bench_story(64, a.chars),
    }
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
