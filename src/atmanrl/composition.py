"""Token composition of chains of thought: numbers, stop words, symbols, from spaCy as the paper's Table 1 counts
them (`spacy_shares`), and from atmanrl's own word lists (`cot_stats` reports both).

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
import logging
import re
from typing import TYPE_CHECKING, Any

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # a tokenizer is passed in; this module never imports transformers
    from transformers import PreTrainedTokenizerBase

SOURCES = ("auto", "tagger", "lexical")
TAGGER = "en_core_web_sm"
# lexical: arithmetic signs count as symbols although spaCy's lexical attributes call "*" and "+" punctuation
# (the tagger tags them SYM in arithmetic); "-" and "%" stay out (hyphens, and the tagger's NOUN for "%")
MATH = frozenset("+*/=<>^×÷")


@functools.cache
def load_nlp(source: str = "auto", model: str = TAGGER) -> tuple[Any, str]:
    """(spaCy pipeline, the source it gives: "tagger" or "lexical"); (None, "none") for `auto` without spaCy."""
    from .errors import UserError

    if source not in SOURCES:
        raise UserError(f"composition source must be one of {'|'.join(SOURCES)}, got {source!r}")
    try:
        import spacy
    except ImportError as e:
        if source != "auto":
            raise UserError(
                f"the {source} composition needs spaCy: pip install spacy (or --composition auto)"
            ) from e
        # a bare GPU machine has no spaCy: the run goes on, and the shares can be computed later from the
        # saved CoTs (`atmanrl ab` recomputes them where it writes its report)
        log.warning("spaCy is not installed: no spaCy token shares (pip install spacy)")
        return None, "none"
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
    elif (
        token.is_currency
        or set(token.text) <= MATH
        or not (any(c.isalnum() for c in token.text) or token.is_punct)
    ):
        return "symbol"
    return "stop" if token.is_stop else "word"


def spacy_shares(texts: list[str], source: str = "auto", model: str = TAGGER) -> dict[str, Any]:
    """Number, stop-word and symbol shares of the spaCy tokens of `texts` (pooled), with the source used."""
    nlp, used = load_nlp(source, model)
    if nlp is None:
        return {
            "source": used,
            "tokens": 0,
            "number_share": None,
            "stop_word_share": None,
            "symbol_share": None,
        }
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


# --- atmanrl's own word lists (a fixed list, so its numbers never depend on what is installed) -------------

# A fixed English stop-word list (the common NLTK core, without contractions), so numbers never depend on
# what happens to be installed.
STOP_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have having
    he her here hers herself him himself his how i if in into is it its itself just me more most my myself no
    nor not now of off on once only or other our ours ourselves out over own same she should so some such than
    that the their theirs them themselves then there these they this those through to too under until up very
    was we were what when where which while who whom why will with would you your yours yourself yourselves
    """.split()
)
WORD_RE = re.compile(r"\w+|[^\w\s]")


def word_tokens(text: str) -> list[str]:
    """Word-level tokens: runs of word characters, and every other non-space character on its own."""
    return WORD_RE.findall(text)


def word_category(token: str) -> str:
    """'number' (has a digit), 'symbol' (no letter or digit: + - * / = $ % . , ...), 'stop' or 'word'."""
    if any(c.isdigit() for c in token):
        return "number"
    if not any(c.isalnum() for c in token):
        return "symbol"
    return "stop" if token.lower() in STOP_WORDS else "word"


def cot_stats(
    reasonings: list[str], tokenizer: PreTrainedTokenizerBase | None = None, composition: str | None = "auto"
) -> dict[str, Any]:
    """Length and composition of CoTs. Shares are pooled over all word tokens of all CoTs (a micro average):
    our own word lists (`*_share`) and, unless `composition` is None, spaCy's as the paper counts them
    (`spacy_*_share`, `spacy_source`; atmanrl.composition)."""
    counts = {"stop": 0, "number": 0, "symbol": 0, "word": 0}
    for text in reasonings:
        for tok in word_tokens(text):
            counts[word_category(tok)] += 1
    words = sum(counts.values())
    n = len(reasonings)
    out: dict[str, Any] = {"n": n}
    if tokenizer is not None:
        lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in reasonings]
        out["mean_cot_tokens"] = sum(lengths) / n if n else None
    out["mean_cot_words"] = words / n if n else None
    for key, name in (("stop", "stop_word_share"), ("number", "number_share"), ("symbol", "symbol_share")):
        out[name] = counts[key] / words if words else None
    if composition is not None:
        shares = spacy_shares(reasonings, composition)
        out["spacy_source"] = shares["source"]
        for name in ("number_share", "stop_word_share", "symbol_share"):
            out[f"spacy_{name}"] = shares[name]
    return out
