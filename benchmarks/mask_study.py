"""The learned mask's study grid, on the TUNING splits only (where the defaults are set).

For each configuration of the `learned` method: reward validity (needed_share, pairwise L-beats-X shares on the
tune problems of benchmarks/reward_validity.py) and ranking quality (hit@1 / AUC on the tune families of
benchmarks/planted.py), with seconds per trace. The held-out splits are reported by the two benchmarks
themselves.

    python benchmarks/mask_study.py --problems 8 --grid '[{}, {"parametrization": "gate", "init": 0.5}]'
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import planted  # noqa: E402
import reward_validity  # noqa: E402

KINDS = ("L", "V", "D", "E", "P")


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--problems", type=int, default=8, help="GSM8K tune problems")
    ap.add_argument("--cases", type=int, default=8, help="planted cases per tune family")
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--grid", default="[{}]", help="JSON list of learned-mask options ({} = defaults)")
    ap.add_argument("--reward", default="{}", help="JSON SaliencyReward options besides method_options")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import torch

    from atmanrl.models import load_model

    torch.manual_seed(0)
    model, tok = load_model(args.model)
    task, rows = reward_validity.problems("gsm8k", "tune", args.problems, Path(args.data_dir))
    records = [r for r in reward_validity.build(task, rows, "tune", tok) if r["kind"] in KINDS]
    cases = planted.make_cases(tok, args.cases, 0, families=planted.families_for("tune"))
    results = []
    print("| config | " + " | ".join(f"L>{k}" for k in KINDS[1:]) + " | planted hit@1 | AUC | rv s/trace |")
    print("|---|" + "---|" * (len(KINDS) + 2))
    for cfg in json.loads(args.grid):
        options = {**json.loads(args.reward), "method_options": cfg}
        rewards, spt = reward_validity.score(model, tok, records, "gsm8k", options)
        summary = reward_validity.summarise_kinds(records, rewards, KINDS)
        res = planted.run(model, tok, cases, "learned", batch_size=16, **cfg)
        results.append({"config": cfg, "validity": summary, "planted": res, "s_per_trace": spt})
        print(
            f"| {json.dumps(cfg) if cfg else 'defaults'} | "
            + " | ".join(f"{summary[k]['L_beats']:.2f}" for k in KINDS[1:])
            + f" | {res['hit1']:.2f} | {res['auc']:.2f} | {spt:.2f} |",
            flush=True,
        )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
