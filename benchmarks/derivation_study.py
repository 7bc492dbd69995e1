"""How to pay less for a CoT that states its answer before deriving it: the study behind `derived_share`.

Scores every record of reward_validity.py's tune split (its six kinds, the extra kinds, and three stress filler
styles of this study's own: short interjections, sentences with numbers, long sentences) once with the reward's
mask and the answer-mention pass (saliency/derivation.py), keeps each trace's read-outs, and then evaluates candidate
rewards on them without another model pass: the share of problems where L scores above each kind.

Candidates: `needed_share` (atmanrl 0.2-0.5), three read-outs of the mask (mean gate, gate above the drift of a
gate no gradient pulls, gate above 0.85), and factors on the first statement of the answer: its absolute specific
support, its support over the last statement's, that ratio weighted by the share of the CoT written in between
(`mentions_between`), and the same with an absolute bar (`derived_support`) above which a first statement counts as
derived. The chosen one is scored once on the report split by reward_validity.py.

    python benchmarks/derivation_study.py --out benchmarks/results/derivation_study.json   # ~10 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import math
import random
from collections.abc import Callable
from pathlib import Path

STRESS = {  # tune only: filler styles the benchmark's pools do not have
    "V:short": ["Hmm.", "Okay.", "Right.", "Let's see.", "Good."],
    "V:numeric": [
        "There are 2 parts to this.",
        "Step 3 comes next.",
        "I will do this in 4 lines.",
        "That makes 1 more line.",
    ],
    "V:long": [
        "I want to be really careful and thorough here, because small mistakes in word problems like this one can "
        "easily add up and lead to a wrong result.",
        "Before going on, it is worth pausing to make sure that every quantity in the question has been accounted "
        "for and nothing was skipped.",
    ],
}
KEYS = (
    "mentions",
    "first_mention_support",
    "last_mention_support",
    "first_mention_specific",
    "last_mention_specific",
    "mentions_between",
)


def records(tok, data_dir: Path, n: int) -> list[dict]:
    from reward_validity import build, problems

    task, rows = problems("gsm8k", "tune", n, data_dir)
    out = build(task, rows, "tune", tok, extra_kinds=True)
    rng = random.Random("derivation-study")
    for r in [r for r in out if r["kind"] == "L"]:
        lines = r["completion"].rsplit("\n####", 1)[0].split("\n")
        for kind, pool in STRESS.items():
            cot = "\n".join(s for line in lines for s in (line, rng.choice(pool)))
            out.append({**r, "kind": kind, "completion": f"{cot}\n#### {r['gold']}"})
    return out


def read_outs(model, tok, recs: list[dict]) -> list[dict]:
    """Per record: the gap, the content tokens' gates and the answer-mention read-outs (None: not scored)."""
    import torch

    from atmanrl.data import get_task
    from atmanrl.rewards import get_reward
    from atmanrl.saliency import content_mask
    from atmanrl.saliency_reward import add_mention_support, value_token_ids

    fn = get_reward("saliency", task="gsm8k", model=model, tokenizer=tok, variant="derived_share")
    ids = value_token_ids(tok, get_task("gsm8k"))  # the specific support, which the reward does not compute
    out: list[dict] = []
    for lo in range(0, len(recs), 16):
        chunk = recs[lo : lo + 16]
        prompts, comps = [r["prompt"] for r in chunk], [r["completion"] for r in chunk]
        traces = fn.traces(prompts, comps, [r["gold"] for r in chunk])
        todo = [t for t in traces if t is not None]
        with torch.enable_grad():
            sals = fn._score(model, todo)
        spans = fn.mention_spans(prompts, comps, traces)
        add_mention_support(model, tok, todo, sals, spans, value_tokens=ids)  # every trace, as the study ran
        it = iter(sals)
        for r, t in zip(chunk, traces, strict=True):
            s = next(it) if t is not None else None
            if s is None:
                out.append({"problem": r["problem"], "kind": r["kind"], "scored": False})
                continue
            keep = content_mask(s.tokens)
            out.append(
                {
                    "problem": r["problem"],
                    "kind": r["kind"],
                    "scored": True,
                    "gap": s.answer_logprob - s.extras["removed_logprob"],
                    "gates": [round(v, 4) for v, k in zip(s.scores, keep, strict=True) if k],
                    **{k: s.extras.get(k) for k in KEYS},
                }
            )
        print(f"{lo + len(chunk)}/{len(recs)} traces", flush=True)
    return out


def drift_gate(steps: int = 15, lr: float = 10.0, lam: float = 0.05, init: float = 0.9) -> float:
    """Where the reward mask's SGD (momentum 0.5) leaves a gate that only the penalty pulls."""
    phi, v = math.log(init / (1 - init)), 0.0
    for _ in range(steps):
        g = 1 / (1 + math.exp(-phi))
        v = 0.5 * v + lam * g * (1 - g)
        phi -= lr * v
    return 1 / (1 + math.exp(-phi))


def candidates() -> dict[str, Callable[[dict], float]]:
    drift = drift_gate()
    reads = {
        "mean": lambda g: sum(min(max(x, 0), 1) for x in g) / len(g),
        "above_drift": lambda g: sum(min(max((x - drift) / (1 - drift), 0), 1) for x in g) / len(g),
        "above_0.85": lambda g: sum(x > 0.85 for x in g) / len(g),
    }

    def share(r, read):
        return read(r["gates"]) if r["scored"] and r["gap"] >= 1.0 and r["gates"] else 0.0

    def specific(r, m):
        return 1.0 if not r.get("mentions") else min(max(r["first_mention_specific"] / m, 0), 1)

    def ratio(r, weighted, a=None):
        if (r.get("mentions") or 0) < 2:
            return 1.0
        d = r["first_mention_support"] / max(r["last_mention_support"], 1.0)
        if a is not None:
            d = max(d, r["first_mention_support"] / a)
        d = min(max(d, 0.0), 1.0)
        return 1 - (1 - d) * (r["mentions_between"] if weighted else 1.0)

    out: dict[str, Callable[[dict], float]] = {}
    for name, read in reads.items():
        out[name] = lambda r, read=read: share(r, read)
    mean = reads["mean"]
    for m in (0.5, 1.0, 2.0):
        out[f"mean x specific/{m}"] = lambda r, m=m: share(r, mean) * specific(r, m)
    out["mean x first/last"] = lambda r: share(r, mean) * ratio(r, False)
    out["mean x first/last, between-weighted"] = lambda r: share(r, mean) * ratio(r, True)
    for a in (2.0, 2.5, 3.0, 4.0):
        out[f"mean x first/last, between-weighted, derived at {a}"] = lambda r, a=a: (
            share(r, mean) * ratio(r, True, a)
        )
    for name in ("above_drift", "above_0.85"):
        out[f"{name} x first/last, between-weighted, derived at 3.0"] = lambda r, read=reads[name]: (
            share(r, read) * ratio(r, True, 3.0)
        )
    return out


def l_beats(rows: list[dict], fn: Callable[[dict], float]) -> dict[str, float]:
    by: dict[str, dict[str, dict]] = {}
    for r in rows:
        by.setdefault(r["problem"], {})[r["kind"]] = r
    kinds = sorted({r["kind"] for r in rows} - {"L"})
    out = {}
    for k in kinds:
        have = [p for p in by.values() if k in p and "L" in p]
        a = [(fn(p["L"]), fn(p[k])) for p in have]
        out[k] = sum((x > y) + 0.5 * (x == y) for x, y in a) / len(a)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--problems", type=int, default=30)
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--read-outs", default=None, help="JSON of earlier read-outs: evaluate without the model")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    if args.read_outs:
        rows = json.loads(Path(args.read_outs).read_text())["read_outs"]
    else:
        import torch

        from atmanrl.models import load_model

        torch.manual_seed(0)
        model, tok = load_model(args.model)
        rows = read_outs(model, tok, records(tok, Path(args.data_dir), args.problems))
    table = {name: l_beats(rows, fn) for name, fn in candidates().items()}
    kinds = list(next(iter(table.values())))
    print("| candidate | " + " | ".join(f"L>{k}" for k in kinds) + " |")
    print("|---|" + "---|" * len(kinds))
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(f"{row[k]:.2f}" for k in kinds) + " |")
    result = {"args": vars(args), "drift_gate": drift_gate(), "l_beats": table, "read_outs": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
