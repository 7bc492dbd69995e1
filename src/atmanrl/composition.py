"""Token composition of chains of thought from spaCy, as the paper's Table 1 counts it: numbers, stop words, symbols.

    shares = spacy_shares(["3 + 4 = 7, so she has 7 apples."])   # {"number_share": ..., "source": "lexical", ...}

What counts (every share is over the CoT's spaCy tokens without whitespace, pooled over all CoTs):
- number: part-of-speech `NUM` (tagger), or spaCy's `like_num` (lexical: digits, "1,000", "3.5", "1/2", "ten");
- stop word: spaCy's `is_stop` (its English stop list; the same in both sources);
- symbol: part-of-speech `SYM` (tagger: "=", "$", "+", "%" ...), or (lexical) a token with no letter or digit
  that spaCy does not call punctuation (`is_punct`), an arithmetic sign (+ * / = < > ^ × ÷), or a currency sign.

Sources: "tagger" uses a trained English pipeline (`en_core_web_sm`, installed from spaCy's own release with
`python -m spacy download en_core_web_sm`; it is not on PyPI, and atmanrl does not install a third-party copy);
"lexical" uses spaCy's tokenizer and lexical attributes only (no model; what CI and a fresh `make setup` have);
"auto" takes the tagger when it is installed. docs/paper.md measures how far the two disagree.
"""

from __future__ import annotations

import functools
from typing import Any

SOURCES = ("auto", "tagger", "lexical")
TAGGER = "en_core_web_sm"
# lexical: arithmetic signs count as symbols although spaCy's lexical attributes call "*" and "+" punctuation
# (the tagger tags them SYM in arithmetic); "-" and "%" stay out (hyphens, and the tagger's NOUN for "%")
MATH = frozenset("+*/=<>^×÷")


@functools.cache
def load_nlp(source: str = "auto", model: str = TAGGER) -> tuple[Any, str]:
    """(spaCy pipeline, the source it gives: "tagger" or "lexical")."""
    import spacy

    from .errors import UserError

    if source not in SOURCES:
        raise UserError(f"composition source must be one of {'|'.join(SOURCES)}, got {source!r}")
    if source in ("auto", "tagger"):
        try:
            return spacy.load(model, exclude=["parser", "ner", "lemmatizer"]), "tagger"
        except OSError as e:
            if source == "tagger":
                raise UserError(
                    f"spaCy pipeline {model!r} is not installed: python -m spacy download {model} "
                    "(or use the lexical source)"
                ) from e
    return spacy.blank("en"), "lexical"


def token_category(token: Any, tagger: bool) -> str:
    """'number', 'symbol', 'stop' or 'word' for one spaCy token (numbers first, then symbols, then stop words)."""
    if (token.pos_ == "NUM") if tagger else token.like_num:
        return "number"
    if tagger:
        if token.pos_ == "SYM":
            return "symbol"
    elif token.is_currency or set(token.text) <= MATH or not (any(c.isalnum() for c in token.text) or token.is_punct):
        return "symbol"
    return "stop" if token.is_stop else "word"


def spacy_shares(texts: list[str], source: str = "auto") -> dict[str, Any]:
    """Number, stop-word and symbol shares of the spaCy tokens of `texts` (pooled), with the source used."""
    nlp, used = load_nlp(source)
    counts = {"number": 0, "symbol": 0, "stop": 0, "word": 0}
    for doc in nlp.pipe(texts):
        for tok in doc:
            if not tok.is_space:
                counts[token_category(tok, used == "tagger")] += 1
    total = sum(counts.values())
    out: dict[str, Any] = {"source": used, "tokens": total}
    for key, name in (("number", "number_share"), ("stop", "stop_word_share"), ("symbol", "symbol_share")):
        out[name] = counts[key] / total if total else None
    return out
