#!/usr/bin/env python3
"""What limits the fused hashtag list: offline studies on `tune fusion --per-image` output.

    hashtale tune fusion --gate --data …/flickr8k --data …/corel5k --data …/imagenet-sample \
        --out runs/fusion.json --per-image runs/per-image.jsonl
    python3 -m venv /var/tmp/study && /var/tmp/study/bin/pip install numpy
    /var/tmp/study/bin/python scripts/study_fusion.py runs/per-image.jsonl

It refits the calibrations the way `tune fusion` does (per source, logistic on the same six
terms, each dev set weighing the same, a small ridge towards the identity), searches the same
grid of decoder and probe bias shifts, and prints each set's P@1 / R@5 / A@5 for:
  - the shipped rule (its first line reproduces the figures `tune fusion` prints);
  - each source left out, and each source alone;
  - an oracle gate (the gate's score replaced by the truth it predicts, 0.9 / 0.1): how far a
    perfect object-photo gate would go;
  - a stronger gate on the concept hashtags (k · logit(g) added to their calibration);
  - a tail shift t: the first hashtag as fused, places 2–5 with the concepts' bias lowered by t.
Results are recorded in docs/tags.md. Not a test.
"""
import json
import math
import sys

import numpy as np

SOURCES = ["decoder", "concepts", "probe"]
TOP_K = 5
SHIFTS = [s * 0.25 for s in range(-8, 13)]


def logit(p):
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def terms(score, context):
    """The calibration's six terms: bias, the hashtag's score, the image's top concept,
    decoder and probe scores and the gate (a missing one adds no term)."""
    present = [logit(x) if x > 0 else 0.0 for x in context]
    return [1.0, logit(score)] + present


def context_of(image):
    top = lambda tags: max((s for _, s in tags), default=0.0)
    return [top(image["concepts"]), top(image["decoder"]), top(image["probe"]), image["object_photo"]]


def fit(x, y, w, ridge=1e-3):
    """Weighted logistic regression by damped Newton steps, ridge towards the identity."""
    x, y, w = np.asarray(x), np.asarray(y, float), np.asarray(w)
    prior = np.zeros(x.shape[1])
    prior[1] = 1.0

    def objective(b):
        z = x @ b
        loss = np.sum(w * (np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z))) - y * z))
        return loss + 0.5 * ridge * np.sum((b - prior) ** 2)

    b = prior.copy()
    for _ in range(100):
        p = 1 / (1 + np.exp(-(x @ b)))
        grad = x.T @ (w * (p - y)) + ridge * (b - prior)
        hess = (x * (w * p * (1 - p))[:, None]).T @ x + ridge * np.eye(len(b))
        step = np.linalg.solve(hess, grad)
        t, before = 1.0, objective(b)
        while objective(b - t * step) > before + 1e-12 and t > 1e-9:
            t *= 0.5
        b = b - t * step
        if np.abs(t * step).sum() < 1e-9:
            break
    return b


class Study:
    def __init__(self, images):
        self.sets = {}
        for image in images:
            self.sets.setdefault(image["set"], []).append(image)
        self.names = list(self.sets)
        self.calibrations = {}
        for source in SOURCES:
            x, y, w = [], [], []
            for rows in self.sets.values():
                n = max(sum(len(r[source]) for r in rows), 1)
                for r in rows:
                    c = context_of(r)
                    for tag, score in r[source]:
                        x.append(terms(score, c))
                        y.append(tag in r["truth"])
                        w.append(1 / n)
            self.calibrations[source] = fit(x, y, w) if x else None
        self.prepared = {
            name: [
                (
                    {
                        s: ([t for t, _ in r[s]], np.array([terms(v, context_of(r)) for _, v in r[s]]))
                        for s in SOURCES
                        if r[s] and self.calibrations[s] is not None
                    },
                    sorted(set(r["truth"])),
                )
                for r in rows
            ]
            for name, rows in self.sets.items()
        }

    def fuse(self, lists, shift, gate_weight=0.0, tail=0.0, k=TOP_K):
        def ranked(concept_shift):
            scores = {}
            for source, (tags, x) in lists.items():
                z = x @ self.calibrations[source] + shift.get(source, 0.0)
                if source == "concepts":
                    z = z + gate_weight * x[:, 5] + concept_shift
                for tag, p in zip(tags, 1 / (1 + np.exp(-z))):
                    scores[tag] = 1 - (1 - scores.get(tag, 0.0)) * (1 - p)
            return sorted(scores, key=lambda t: (-scores[t], t))

        first = ranked(0.0)[:k]
        if not tail or not first:
            return first
        return [first[0]] + [t for t in ranked(-tail) if t != first[0]][: k - 1]

    def figures(self, name, shift, **options):
        p1 = r5 = a5 = 0.0
        for lists, truth in self.prepared[name]:
            got = self.fuse(lists, shift, **options)
            p1 += bool(got) and got[0] in truth
            r5 += sum(t in got for t in truth) / max(len(truth), 1)
            a5 += any(t in truth for t in got)
        n = max(len(self.prepared[name]), 1)
        return p1 / n, r5 / n, a5 / n

    def best(self, **options):
        """The shift pair `tune fusion` would choose: best mean P@1, then best mean R@5 (exact ties
        go to the first pair in grid order here, to the smallest shifts there)."""
        best = None
        for ds in SHIFTS:
            for ps in SHIFTS:
                per = [self.figures(n, {"decoder": ds, "probe": ps}, **options) for n in self.names]
                key = (round(sum(p[0] for p in per), 9), round(sum(p[1] for p in per), 9))
                if best is None or key > best[0]:
                    best = (key, (ds, ps), per)
        return best[1], best[2]


def show(label, shift, per, names):
    cells = "  ".join(
        f"{n.rstrip('/').split('/')[-1]} {p[0]:.3f}/{p[1]:.3f}/{p[2]:.3f}" for n, p in zip(names, per)
    )
    print(f"{label:<34} shifts {shift}  {cells}", flush=True)


def main(path):
    images = [json.loads(line) for line in open(path)]
    study = Study(images)
    names = study.names
    print("P@1/R@5/A@5 per set")
    shift, per = study.best()
    show("shipped rule", shift, per, names)
    base = {"decoder": shift[0], "probe": shift[1]}
    for source in SOURCES:
        show(f"without {source}", "-", [study.figures(n, {**base, source: -50}) for n in names], names)
        alone = {s: (0 if s == source else -50) for s in SOURCES}
        show(f"{source} alone", "-", [study.figures(n, alone) for n in names], names)
    for k in (0.5, 1.0, 2.0):
        shift, per = study.best(gate_weight=k)
        show(f"concept gate weight +{k}", shift, per, names)
    for t in (1.0, 2.0, 3.0):
        shift, per = study.best(tail=t)
        show(f"tail shift {t}", shift, per, names)
    for image in images:
        hit = bool(image["concepts"]) and image["concepts"][0][0] in image["truth"]
        image["object_photo"] = 0.9 if hit else 0.1
    shift, per = Study(images).best()
    show("oracle gate", shift, per, names)


if __name__ == "__main__":
    main(sys.argv[1])
