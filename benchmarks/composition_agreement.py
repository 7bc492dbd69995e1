"""How far spaCy's lexical attributes (what atmanrl uses without a tagger) disagree with its English tagger.

Texts: GSM8K reference rationales (test split, calculator annotations removed). Per category (number, symbol,
stop word) the share under each source, and the token-level agreement: of the tokens either source puts in the
category, the share both do (a Jaccard index).

    PYTHONPATH=/path/with/the/pipeline python benchmarks/composition_agreement.py --tagger en_core_web_sm \
        --out benchmarks/results/composition_agreement.json
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tagger", default="en_core_web_sm", help="the installed spaCy pipeline to compare with")
    ap.add_argument("--problems", type=int, default=300)
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    from atmanrl.composition import load_nlp, spacy_shares, token_category

    rows = [json.loads(x) for x in (Path(args.data_dir) / "gsm8k" / "test.jsonl").read_text().splitlines()]
    texts = [re.sub(r"<<[^>]*>>", "", r["answer"].split("####")[0]).strip() for r in rows[: args.problems]]
    tagger, used = load_nlp("tagger", args.tagger)
    lexical, _ = load_nlp("lexical")
    both = {c: [0, 0] for c in ("number", "symbol", "stop")}  # [in both, in either]
    for doc_t, doc_l in zip(tagger.pipe(texts), lexical.pipe(texts)):
        if [t.text for t in doc_t] != [t.text for t in doc_l]:
            continue  # the tagger's pipeline tokenises like the blank one; a mismatch would misalign the pair
        for tt, tl in zip(doc_t, doc_l):
            if tt.is_space:
                continue
            a, b = token_category(tt, True), token_category(tl, False)
            for c in both:
                both[c][0] += a == c and b == c
                both[c][1] += a == c or b == c
    result = {
        "texts": len(texts),
        "tagger": args.tagger,
        "tagger_shares": spacy_shares(texts, "tagger", args.tagger),
        "lexical_shares": spacy_shares(texts, "lexical"),
        "token_jaccard": {c: n / d if d else None for c, (n, d) in both.items()},
    }
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
