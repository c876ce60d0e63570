#!/usr/bin/env python3
"""Builds assets/concepts/concepts.tsv: the hashtags each ImageNet-1k class of the encoder stands for.

Inputs (see assets/concepts/README.md for versions and licences):
  --synsets   timm's `imagenet_synsets.txt` (the 1,000 WordNet ids in class-index order)
  --wordnet   WordNet 3.0's dict folder (Debian `wordnet-base`: /usr/share/wordnet)
  --vocab     word lists whose words count as hashtags people use (HARRISON, Flickr8k, Corel5k
              vocabularies; optional, repeatable)
Needs the PyPI package `wordfreq` (English Zipf frequencies).

The rule, per class (the same rule for every class; nothing is hand-picked per class):
  1. Own word: the first lemma of the class synset (WordNet lists a synset's most used name first)
     that is everyday: Zipf >= OWN_MIN_ZIPF, or in a hashtag vocabulary. Rare names (tench, 2.2)
     give no own word.
  2. Hypernyms within MAX_DEPTH levels are candidates unless their synset is one of WordNet's
     unique beginners (the lexicographer file noun.Tops: animal, food, artifact, …), covers more
     than MAX_COVER of the 1,000 classes (`dog` covers 118 and stays; `mammal`, `device` go), or its
     name is vague (VAGUE). A synset's name is its first everyday lemma.
     - The basic-level hypernym: the nearest candidate that is in a hashtag vocabulary, the
       words people tag photos with (tabby -> cat, espresso -> coffee, sports car -> car,
       golden retriever -> dog, mountain bike -> bicycle, jersey -> shirt); without one, the
       candidate with the highest Zipf value.
     - At most one more: the most frequent candidate in a hashtag vocabulary (Irish terrier ->
       terrier, dog); else the nearest other candidate within SECOND_MAX_DEPTH levels whose
       name is a common word (Zipf >= SECOND_MIN_ZIPF): missile -> rocket.
     A hypernym is named by its first lemma only, if that is everyday (`toy dog, toy` gives no
     `toy`; `clothing, wear` gives no `wear`).
  3. A class left with no hashtag keeps its first lemma anyway.
Zipf values come from wordfreq; a hypernym phrase's value is lowered by PHRASE_PENALTY per extra word,
because wordfreq estimates a phrase as if its words were independent, which overstates compounds.
Hashtags are the lemma lowercased with every non-letter removed (`sports car` -> `sportscar`), as
hashtags are written. Each hashtag carries its Zipf value, which breaks score ties.
"""
import argparse
import collections
import re
import sys

from wordfreq import zipf_frequency

OWN_MIN_ZIPF = 2.5
HYPERNYM_MIN_ZIPF = 3.5
SECOND_MIN_ZIPF = 4.0
SECOND_MAX_DEPTH = 2
PHRASE_PENALTY = 1.0
MAX_COVER = 130
MAX_DEPTH = 4
# WordNet's lexicographer file of unique beginners (entity, animal, food, artifact, …).
TOPS_LEXFILE = "03"
# Words that name no thing a photo shows, or that no one tags a photo with.
VAGUE = {
    "whole", "unit", "object", "thing", "matter", "entity", "organism", "being", "artifact",
    "artefact", "article", "commodity", "goods", "covering", "instrumentality", "device",
    "structure", "construction", "abstraction", "group", "creation", "product", "form", "system",
    "equipment", "mechanism", "container", "implement", "material", "substance", "part", "piece",
    "kind", "type", "protective covering", "causal agent", "living thing", "physical object",
    "vertebrate", "invertebrate", "placental", "chordate", "craniate", "item", "member",
    # first everyday lemmas whose everyday sense is another one (a verb, the weather, a rock layer)
    "protection", "produce", "formation", "transport", "instrument", "wind", "vessel", "wear",
    "arm", "cycle", "nutrition", "defense", "drug", "solid", "communication system",
    "white goods", "apparatus", "gear", "rig", "runner", "craft",
    # superordinates that sum every vehicle or garment class, so they outrank the word that
    # names the thing (a photo of a bike is #bicycle, not #vehicle)
    "vehicle", "clothing", "garment",
}


def read_nouns(folder):
    """offset -> (lemmas in order, hypernym offsets, lexicographer file)"""
    nouns = {}
    with open(f"{folder}/data.noun", encoding="latin-1") as f:
        for line in f:
            if line.startswith(" "):
                continue
            head = line.split("|", 1)[0].split()
            offset = head[0]
            n_words = int(head[3], 16)
            words = [head[4 + 2 * i] for i in range(n_words)]
            rest = head[4 + 2 * n_words:]
            n_ptrs = int(rest[0])
            hypernyms = []
            for i in range(n_ptrs):
                symbol, target, pos = rest[1 + 4 * i], rest[2 + 4 * i], rest[3 + 4 * i]
                if symbol in ("@", "@i") and pos == "n":
                    hypernyms.append(target)
            lemmas = [re.sub(r"\(.*\)$", "", w).replace("_", " ") for w in words]
            nouns[offset] = (lemmas, hypernyms, head[1])
    return nouns


def ancestors(nouns, offset):
    """Every hypernym synset with its distance, nearest first."""
    seen = {offset: 0}
    queue = collections.deque([offset])
    while queue:
        cur = queue.popleft()
        for h in nouns[cur][1]:
            if h not in seen:
                seen[h] = seen[cur] + 1
                queue.append(h)
    return seen


def hashtag(lemma):
    return re.sub(r"[^a-z]", "", lemma.lower())


def zipf(lemma):
    return zipf_frequency(lemma.lower(), "en")


def hypernym_zipf(lemma):
    return zipf(lemma) - PHRASE_PENALTY * (len(lemma.split()) - 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--synsets", required=True)
    ap.add_argument("--wordnet", default="/usr/share/wordnet")
    ap.add_argument("--classes", required=True, help="assets/encoder/imagenet_classes.txt")
    ap.add_argument("--vocab", action="append", default=[])
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    wnids = [l.strip() for l in open(a.synsets) if l.strip()]
    names = [l.rstrip("\n") for l in open(a.classes)]
    assert len(wnids) == 1000 and wnids == sorted(wnids), "1,000 sorted WordNet ids"
    assert len(names) == 1000
    vocab = set()
    for path in a.vocab:
        for line in open(path, encoding="utf-8"):
            if line.strip():
                vocab.add(hashtag(line.split()[0]))
    nouns = read_nouns(a.wordnet)
    offsets = [w[1:] for w in wnids]

    cover = collections.Counter()
    paths = {}
    for o in offsets:
        paths[o] = ancestors(nouns, o)
        cover.update(paths[o].keys())

    def everyday(lemma, min_zipf, score=zipf):
        return score(lemma) >= min_zipf or hashtag(lemma) in vocab

    def name(lemmas, min_zipf, score=zipf):
        """The first everyday, non-vague lemma, or None."""
        for l in lemmas:
            if l.lower() not in VAGUE and everyday(l, min_zipf, score):
                return l
        return None

    rows = []
    for idx, o in enumerate(offsets):
        lemmas = nouns[o][0]
        tags = []
        own = name(lemmas, OWN_MIN_ZIPF)
        if own:
            tags.append(own)
        cands = []
        for h, depth in sorted(paths[o].items(), key=lambda kv: (kv[1], kv[0])):
            if depth == 0 or depth > MAX_DEPTH or cover[h] > MAX_COVER:
                continue
            if nouns[h][2] == TOPS_LEXFILE:
                continue
            # A hypernym is named by its first lemma only (`toy dog, toy` is not `toy`).
            n = name(nouns[h][0][:1], HYPERNYM_MIN_ZIPF, hypernym_zipf)
            if n and hashtag(n) not in {hashtag(t) for t in tags}:
                cands.append((depth, n))
        if cands:
            tagged = [c for c in cands if hashtag(c[1]) in vocab]
            if tagged:
                basic = min(tagged, key=lambda c: (c[0], -hypernym_zipf(c[1])))
            else:
                basic = max(cands, key=lambda c: (hypernym_zipf(c[1]), -c[0]))
            tags.append(basic[1])
            common = max(tagged, key=lambda c: (hypernym_zipf(c[1]), -c[0])) if tagged else None
            second = [common] if common and common[1] != basic[1] else []
            second += [c for c in cands if c[1] != basic[1] and c[0] <= SECOND_MAX_DEPTH
                      and hypernym_zipf(c[1]) >= SECOND_MIN_ZIPF
                      and hashtag(c[1]) not in {hashtag(t) for t in tags}]
            if second:
                tags.append(second[0][1])
        if not tags:
            tags.append(lemmas[0])
        cells = " ".join(f"{hashtag(t)}:{zipf(t):.2f}" for t in tags if hashtag(t))
        rows.append(f"{idx}\t{wnids[idx]}\t{names[idx]}\t{cells}")

    with open(a.out, "w", encoding="utf-8") as f:
        f.write("# index\twnid\tclass\thashtag:zipf … (built by scripts/build_concepts.py)\n")
        f.write("\n".join(rows) + "\n")
    print(f"wrote {len(rows)} classes to {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
