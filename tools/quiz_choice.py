#!/usr/bin/python3
"""A real multiple-choice set from a Debian package: "which line comes next" over the
verse quizzes of bsdgames' quiz(6) (Shakespeare's lines in `bard`, English poetry in
`poetry`), as `gpt eval-choice` records.

    /usr/bin/python3 tools/quiz_choice.py [--quiz-dir DIR] [--endings 4] [--seed 1] > quiz.jsonl

Each quiz entry gives a line and the line that follows it in the work. A record's
context is the line and a newline; its endings are the true next line and the next
lines of endings - 1 other entries of the same quiz, in a seeded order. The files are
those of Debian 12's bsdgames 2.17-29+b1 (`apt-get install bsdgames`, which `make deps`
does), checked by SHA-256. quiz(6)'s patterns are read as the quiz would print its
answer: the first of alternatives (a|b, [a|b]) and optional parts ({...}) included."""

import argparse
import hashlib
import json
import os
import random
import sys

QUIZ_DIR = "/usr/share/games/bsdgames/quiz"
PINNED = {  # Debian 12, bsdgames 2.17-29+b1
    "bard": "a1d1a362cc2bde672da2ede0dd9357a722669296bcee733f328bcddeefee6200",
    "poetry": "9bca04023d1b550c9a113c8649cca7877158a844cad20258150f84571eb85f11",
}


def entries(text):
    """The data file's lines, continuations joined, each split into its categories at
    unescaped colons (backslash escapes kept for canonical())."""
    out, cur = [], ""
    for line in text.split("\n"):
        if line.endswith("\\") and not line.endswith("\\\\"):
            cur += line[:-1]
            continue
        cur += line
        if cur.strip():
            fields, field, i = [], "", 0
            while i < len(cur):
                if cur[i] == "\\" and i + 1 < len(cur):
                    field += cur[i:i + 2]
                    i += 2
                    continue
                if cur[i] == ":":
                    fields.append(field)
                    field = ""
                else:
                    field += cur[i]
                i += 1
            out.append(fields + [field])
        cur = ""
    return out


def canonical(pat):
    """The text a pattern prints as: its first alternative, optional parts included."""
    def seq(i, stop):
        text, first_alt_done = "", False
        while i < len(pat) and pat[i] not in stop:
            c = pat[i]
            if c == "\\" and i + 1 < len(pat):
                piece, i = pat[i + 1], i + 2
            elif c in "{[":
                piece, i = seq(i + 1, "}]")
                i += 1
            elif c == "|":  # later alternatives: skip to the end of this group
                first_alt_done = True
                depth, i = 0, i + 1
                while i < len(pat) and not (depth == 0 and pat[i] in stop):
                    depth += pat[i] in "{["
                    depth -= pat[i] in "}]"
                    i += 1 + (pat[i] == "\\")
                continue
            else:
                piece, i = c, i + 1
            if not first_alt_done:
                text += piece
        return text, i
    return seq(0, "")[0]


def records(name, text, n_endings, rng):
    pairs = [(canonical(e[0]).strip(), canonical(e[1]).strip()) for e in entries(text) if len(e) >= 2]
    pairs = [p for p in pairs if p[0] and p[1]]
    out = []
    for i, (line, nxt) in enumerate(pairs):
        others = rng.sample([p[1] for j, p in enumerate(pairs) if j != i and p[1] != nxt], n_endings - 1)
        label = rng.randrange(n_endings)
        endings = others[:label] + [nxt] + others[label:]
        out.append({"context": line + "\n", "endings": endings, "label": label, "source": f"bsdgames quiz/{name}"})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quiz-dir", default=QUIZ_DIR)
    ap.add_argument("--endings", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    for name, digest in PINNED.items():
        path = os.path.join(a.quiz_dir, name)
        try:
            data = open(path, "rb").read()
        except OSError as e:
            sys.exit(f"quiz_choice: {path}: {e.strerror} (install Debian's bsdgames: make deps)")
        if hashlib.sha256(data).hexdigest() != digest:
            sys.exit(f"quiz_choice: {path}: SHA-256 differs from Debian 12's bsdgames 2.17-29+b1")
        for r in records(name, data.decode("utf-8"), a.endings, rng):
            print(json.dumps(r))


if __name__ == "__main__":
    main()
