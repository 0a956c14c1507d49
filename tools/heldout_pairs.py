#!/usr/bin/python3
"""Held-out sentences of a text against the same words shuffled, as `gpt eval-choice`
records: does a model prefer the real word order on text it never trained on?

    /usr/bin/python3 tools/heldout_pairs.py [--val-fraction 0.05] [--n 100] [--seed 1] TEXT > pairs.jsonl
    /usr/bin/python3 tools/heldout_pairs.py --val-fraction 0.05 --stats TEXT

TEXT is split into documents as `gpt prepare --split-on-blank-lines` splits it (a
paragraph is a run of lines that are not blank, without its final newline; a blank line
holds only spaces, tabs or \\r), and document g is a validation document when
floor((g + 1) F) > floor(g F), prepare's own rule for `--val-fraction F`
(docs/formats.md). Sentences are taken only from validation documents: those of 8 to 30
words that start with a capital letter, end with . ! or ?, hold no quotation marks and
do not occur anywhere in the training documents. N of them are drawn with the seed, in
text order; each record has an empty context and two endings, the sentence and its
words (split at whitespace, punctuation kept on its word) after the first in a shuffled
order other than the original (so the same tokens), the sentence's place drawn too.

--stats prints the validation split's documents and UTF-8 bytes as one JSON object
instead (the bytes a per-token loss is spread over, for bits per byte)."""

import argparse
import json
import math
import random
import re
import sys

BLANK = re.compile(r"[ \t\r]*")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
ABBREV = re.compile(r"\b(Mr|Mrs|Dr|St|Capt|Messrs)\.$")
QUOTES = set("\"“”‘")  # ’ is also the apostrophe of "people’s", so it is allowed


def documents(text):
    """prepare's paragraphs, in order."""
    docs, cur = [], []
    for line in text.split("\n"):
        if BLANK.fullmatch(line):
            if cur:
                docs.append("\n".join(cur))
            cur = []
        else:
            cur.append(line)
    if cur:
        docs.append("\n".join(cur))
    return docs


def is_val(g, f):
    return math.floor((g + 1) * f) > math.floor(g * f)


def sentences(doc):
    """The sentences of a paragraph, its lines joined by spaces (no split after Mr. etc.)."""
    out, cur = [], ""
    for piece in SENTENCE_END.split(" ".join(doc.split())):
        cur = f"{cur} {piece}" if cur else piece
        if not ABBREV.search(cur):
            out.append(cur)
            cur = ""
    if cur:
        out.append(cur)
    return out


def candidates(docs, f, min_words, max_words):
    train = " ".join(" ".join(d.split()) for g, d in enumerate(docs) if not is_val(g, f))
    out = []
    for g, d in enumerate(docs):
        if not is_val(g, f):
            continue
        for s in sentences(d):
            words = s.split()
            if (min_words <= len(words) <= max_words and s[0].isupper() and s[-1] in ".!?"
                    and not QUOTES & set(s) and s not in train):
                out.append((g, s))
    return out


def shuffled(words, rng):
    """The words after the first in another order. The first stays: it is the one word
    without a space in front, so the two endings are the same tokens (the tokenizer's
    pieces are a word with its leading space, or its punctuation), only ordered
    otherwise, and a model that knows no order scores them alike."""
    w = list(words)
    while w == words:
        rest = w[1:]
        rng.shuffle(rest)
        w = w[:1] + rest
    return " ".join(w)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("text")
    ap.add_argument("--val-fraction", type=float, default=0.05)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--min-words", type=int, default=8)
    ap.add_argument("--max-words", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--stats", action="store_true")
    a = ap.parse_args()
    if not 0 < a.val_fraction < 1:
        sys.exit("heldout_pairs: --val-fraction must be in (0, 1)")
    try:
        raw = open(a.text, "rb").read()
    except OSError as e:
        sys.exit(f"heldout_pairs: {a.text}: {e.strerror}")
    text = raw.decode("utf-8")
    if text.startswith("\ufeff"):  # prepare skips a byte order mark
        text = text[1:]
    docs = documents(text)
    if a.stats:
        val = [d for g, d in enumerate(docs) if is_val(g, a.val_fraction)]
        print(json.dumps({"docs": len(docs), "val_docs": len(val),
                          "val_bytes": sum(len(d.encode("utf-8")) for d in val)}))
        return
    cands = candidates(docs, a.val_fraction, a.min_words, a.max_words)
    if len(cands) < a.n:
        sys.exit(f"heldout_pairs: {a.text}: only {len(cands)} held-out sentences of "
                 f"{a.min_words}-{a.max_words} words, fewer than --n {a.n}")
    rng = random.Random(a.seed)
    for i in sorted(rng.sample(range(len(cands)), a.n)):
        g, s = cands[i]
        words = s.split()
        label = rng.randrange(2)
        endings = [shuffled(words, rng)]
        endings.insert(label, s)
        print(json.dumps({"context": "", "endings": endings, "label": label,
                          "source": f"validation document {g}"}, ensure_ascii=False))


if __name__ == "__main__":
    main()
