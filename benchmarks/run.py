"""The performance benchmark suite (`make bench`, `make bench BENCH_ARGS=--quick`).

Every figure is a ratio of two timings measured in this one run on the embedded model, so the numbers
transfer across machines better than seconds do. Writes `benchmarks/results/latest.json` and the scaling
curves `benchmarks/results/scaling.png`.

    python benchmarks/run.py [--quick] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

GOALS = {
    "p1_saliency_over_generation": ("<=", 0.5),
    "p1_derived_over_needed": ("<=", 2.0),
    "p5_loo_over_learned_256": (">=", 5.0),
    "p2_loo_over_learned": (">=", 5.0),
    "p3_step_ratio": ("<=", 1.3),
    "p4_cache_speedup": (">=", 5.0),
    "mem_ratio": ("<=", 1.5),
    "paper_answer_over_reward_64": ("<=", 1.2 * 200 / 15),
    "paper_answer_over_reward_256": ("<=", 1.2 * 200 / 15),
}


def timed(fn, *args, **kw) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return time.perf_counter() - t0, out


def fixed_length_traces(model, tok, n: int, cot_tokens: int, seed: int = 0):
    """`n` traces whose CoT is exactly `cot_tokens` sampled tokens, with a well-formed answer line.

    Generation is forced to the full length (min_new_tokens), so timings compare like with like.
    """
    from atmanrl.data import get_task
    from atmanrl.generate import render_prompt
    from atmanrl.saliency import Trace

    task = get_task("arith")
    examples = task.load(limit=n, seed=seed)
    prompts = [render_prompt(tok, task.messages(e)) for e in examples]
    torch.manual_seed(seed)
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    t0 = time.perf_counter()
    with torch.no_grad():
        ids = model.generate(
            **enc,
            max_new_tokens=cot_tokens,
            min_new_tokens=cot_tokens,
            do_sample=True,
            temperature=0.7,
            pad_token_id=tok.pad_token_id,
        )
    gen_seconds = time.perf_counter() - t0
    texts = tok.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    traces = []
    for p, text, e in zip(prompts, texts, examples):
        answer = f"\n#### {e.gold}"
        traces.append(Trace(p, text.replace("####", "##"), answer, (6, 6 + len(e.gold))))
    return traces, gen_seconds


def bench_p1(model, tok, quick: bool) -> dict:
    """The default reward's saliency on one CPU step's 8 rollouts of 128 CoT tokens, against generating them: the
    reward mask, then the answer-mention pass that `derived_share` adds, as one process runs it (only rollouts that
    state their answer twice; these state it at most once). `p1_derived_over_needed`: the mask plus the pass as
    distributed training runs it (one row per rollout, whatever the text: the most it can cost) over the mask
    alone (`needed_share`), in the same run."""
    from atmanrl.data import get_task
    from atmanrl.saliency import compute_saliency, mention_support
    from atmanrl.saliency_reward import answer_mentions

    traces, gen = fixed_length_traces(model, tok, 8, 128)
    mask, _ = timed(compute_saliency, model, tok, traces, "learned", preset="reward")
    task = get_task("arith")
    spans = [answer_mentions(task, t, t.prompt) for t in traces]
    single, _ = timed(mention_support, model, tok, traces, spans, fixed=False, least=2)
    fixed, _ = timed(mention_support, model, tok, traces, spans, fixed=True)
    return {
        "p1_saliency_over_generation": (mask + single) / gen,
        "p1_derived_over_needed": (mask + fixed) / mask,
        "p1_generation_s": gen,
        "p1_saliency_s": mask + single,
        "p1_mask_s": mask,
        "p1_mention_pass_s": single,
        "p1_mention_pass_fixed_s": fixed,
    }


def bench_p2(model, tok, quick: bool) -> dict:
    import planted

    cases = planted.make_cases(tok, n=6 if quick else 12, seed=0)
    learned = planted.run(model, tok, cases, "learned")
    loo = planted.run(model, tok, cases, "atman")
    return {
        "p2_loo_over_learned": loo["s_per_case"] / learned["s_per_case"],
        "p2_hit1_learned": learned["hit1"],
        "p2_hit1_loo": loo["hit1"],
        "p2_auc_learned": learned["auc"],
        "p2_auc_loo": loo["auc"],
        "p2_learned_s_per_case": learned["s_per_case"],
        "p2_loo_s_per_case": loo["s_per_case"],
    }


def bench_p3(quick: bool, workdir: Path, extra: tuple[str, ...] = (), steps: int | None = None) -> dict:
    """Mean GRPO step time (TRL's own `step_time`, first step excluded) of both embedded-model recipes;
    `extra` options go to both runs (benchmarks/gpu.py moves them to CUDA)."""
    root = HERE.parent
    steps = steps or (3 if quick else 5)
    times = {}
    for kind in ("outcome", "atmanrl"):
        out = workdir / f"p3_{kind}"
        cmd = [
            sys.executable,
            "-m",
            "atmanrl.cli",
            "train",
            str(root / f"recipes/smollm2-135m/arith_{kind}.yaml"),
            "--max_steps",
            str(steps),
            "--output_dir",
            str(out),
            "--save_steps",
            "1000",
            "--plot",
            "false",
            "--report_to",
            "none",
            *extra,
        ]
        subprocess.run(
            cmd,
            check=True,
            env=os.environ | {"ATMANRL_NO_PROGRESS": "1"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        state = json.loads(next(out.glob("checkpoint-*/trainer_state.json")).read_text())
        st = [h["step_time"] for h in state["log_history"] if "step_time" in h][1:]
        times[kind] = sum(st) / len(st)
    return {
        "p3_step_ratio": times["atmanrl"] / times["outcome"],
        "p3_outcome_step_s": times["outcome"],
        "p3_atmanrl_step_s": times["atmanrl"],
    }


def bench_p4(model, tok, quick: bool) -> dict:
    from atmanrl.saliency import compute_saliency

    traces, _ = fixed_length_traces(model, tok, 4 if quick else 8, 256)
    steps = 3 if quick else 10
    # the model's own dtype for the prefix: p4 checks that the cache changes no score (the reward's bfloat16 prefix
    # on CPUs that have it is a separate, measured choice: docs/performance.md)
    kw = dict(preset="reward", steps=steps, prefix_dtype="model")
    cached, a = timed(compute_saliency, model, tok, traces, "learned", use_cache=True, **kw)
    full, b = timed(compute_saliency, model, tok, traces, "learned", use_cache=False, **kw)
    diff = max(abs(x - y) for sa, sb in zip(a, b) for x, y in zip(sa.scores, sb.scores))
    return {
        "p4_cache_speedup": full / cached,
        "p4_cached_s": cached,
        "p4_full_s": full,
        "p4_max_score_diff": diff,
    }


def bench_p5(model, tok, quick: bool, also: list[dict] | None = None) -> dict:
    """Leave-one-out over the reward's learned mask at CoT lengths 64, 256 and 1024 (100-token prompts, random
    token ids: the timing does not depend on the text). Leave-one-out runs one variant per CoT token; the mask runs
    a fixed number of steps, so the ratio grows with the CoT.

    8 traces per batch, as p1 and the GPU benchmark use: one GRPO step of the CPU recipe has 8 completions, and the
    reward scores the step's correct ones in one forward (its token budget, 16384, holds them). A mask step costs
    about the same for 4 traces as for 8 (it is bound by reading the weights), so the mask's time grows less than
    the batch while leave-one-out's doubles: the ratio depends on the batch, and `p5_loo_over_learned_256_batch4`
    keeps the 4-trace figure of earlier versions (a step with half its completions correct).

    `also`: other settings of the reward's mask (options on top of preset `reward`, e.g. fewer steps), timed on
    the 256-token, 8-trace batch against the same leave-one-out run (`p5_also`); they set no goal."""
    from gpu import rows

    from atmanrl.saliency import frozen, make_method, score_encoded

    out = {}
    for n, batch in [(64, 8), (256, 8), (256, 4)] + ([] if quick else [(1024, 8)]):
        encs = rows(model.config.vocab_size, batch, 100, n)
        t = {}
        extra = list(enumerate(also or [])) if (n, batch) == (256, 8) else []
        for name, m in (
            ("learned", make_method("learned", preset="reward")),
            *((f"also{i}", make_method("learned", preset="reward", **o)) for i, o in extra),
            # the same prefix pass as the reward's mask (bfloat16 where the CPU has it): the methods' costs compare
            ("loo", make_method("leave_one_out", prefix_dtype="auto")),
        ):
            with frozen(model):
                t[name] = timed(score_encoded, m, model, encs, tok.pad_token_id, model.device)[0]
        key = f"{n}" if batch == 8 else f"{n}_batch{batch}"
        out[f"p5_loo_over_learned_{key}"] = t["loo"] / t["learned"]
        out[f"p5_learned_s_{key}"], out[f"p5_loo_s_{key}"] = t["learned"], t["loo"]
        if extra:
            out["p5_also"] = [
                {"options": o, "learned_s": t[f"also{i}"], "loo_over_learned": t["loo"] / t[f"also{i}"]}
                for i, o in extra
            ]
    return out


def bench_paper(model, tok, quick: bool) -> dict:
    """The published mask's cost (docs/paper.md) at CoT lengths 64 and 256 (8 traces, 100-token prompts):

    - `paper_answer_over_reward_N`: the answer-rows approximation (200 steps) over the default reward mask
      (15 steps), both whole calls; the goal is the same cost per step, 1.2 x 200 / 15 = 16;
    - the exact mask (entries on every later row) runs 200 forward and backward passes over the CoT and answer
      rows: its per-step time is the difference of a 3-step and a 1-step call, and `paper_exact_trace_s_N` is the
      1-step call plus 199 more steps, per trace (extrapolated: a full call takes about 24 min here at 256);
    - its floor: one forward and backward over the same rows with nothing but a column bias to differentiate
      (the attention gradient in scope "all"), `paper_exact_over_floor_N` the step's multiple of it."""
    from gpu import rows

    from atmanrl.saliency import frozen, make_method, score_encoded

    out = {}
    for n in (64,) if quick else (64, 256):
        encs = rows(model.config.vocab_size, 8, 100, n)
        t = {}
        with frozen(model):
            for name, m in (
                ("reward", make_method("learned", preset="reward")),
                ("paper_answer", make_method("learned", preset="paper_answer")),
                ("exact1", make_method("learned", preset="paper", steps=1)),
                ("exact3", make_method("learned", preset="paper", steps=3)),
                ("floor", make_method("attention_gradient", scope="all")),
                ("fixed", make_method("learned", preset="paper", steps=0)),
            ):
                t[name] = timed(score_encoded, m, model, encs, tok.pad_token_id, model.device)[0]
        step = (t["exact3"] - t["exact1"]) / 2
        floor = t["floor"] - t["fixed"]  # the gradient pass alone: the fixed passes are the same
        out[f"paper_answer_over_reward_{n}"] = t["paper_answer"] / t["reward"]
        out[f"paper_reward_s_{n}"], out[f"paper_answer_s_{n}"] = t["reward"], t["paper_answer"]
        out[f"paper_exact_step_s_{n}"] = step
        out[f"paper_exact_trace_s_{n}"] = (t["exact1"] + 199 * step) / 8
        out[f"paper_exact_floor_step_s_{n}"] = floor
        out[f"paper_exact_over_floor_{n}"] = step / floor if floor > 0 else None
    return out


MEM_CHILD = r"""
import json, resource, sys, torch
from atmanrl import load_model
from atmanrl.saliency import Trace, compute_saliency, encode
model, tok = load_model()
traces = [Trace(**t) for t in json.load(open({traces!r}))]

def status_kb(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])

# Loading can peak above what the model then holds (a transient copy of the weights), and ru_maxrss keeps that
# peak: on Linux, reset the peak to the current RSS (clear_refs 5) and read it back (VmHWM).
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base, peak = status_kb("VmRSS"), lambda: status_kb("VmHWM")
except OSError:
    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    base = peak()
if {what!r} == "saliency":
    compute_saliency(model, tok, traces, "learned", preset="reward")
else:
    rows = [encode(tok, t).ids for t in traces]
    n = max(map(len, rows))
    ids = torch.tensor([r + [tok.pad_token_id] * (n - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (n - len(r)) for r in rows])
    model.train()
    model(input_ids=ids, attention_mask=mask, labels=ids).loss.backward()
print(json.dumps({{"peak_kb": peak() - base}}))
"""


def bench_mem(model, tok) -> dict:
    """Peak resident memory above the loaded model, saliency vs one training forward+backward on the same
    batch (8 traces, 128-token CoTs), each in a fresh process so that neither sees the other's peak."""
    import dataclasses
    import tempfile

    traces, _ = fixed_length_traces(model, tok, 8, 128)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump([dataclasses.asdict(t) for t in traces], f)
    peaks = {}
    try:
        for what in ("saliency", "train"):
            code = MEM_CHILD.format(traces=f.name, what=what)
            out = subprocess.run(
                [sys.executable, "-c", code],
                capture_output=True,
                text=True,
                check=True,
                env=os.environ | {"ATMANRL_NO_PROGRESS": "1"},
            )
            peaks[what] = json.loads(out.stdout.strip().splitlines()[-1])["peak_kb"] / 1024
    finally:
        os.unlink(f.name)
    if peaks["train"] <= 0:
        raise RuntimeError(f"mem: the training forward+backward measured no memory above the model ({peaks})")
    return {
        "mem_ratio": peaks["saliency"] / peaks["train"],
        "mem_saliency_mb": peaks["saliency"],
        "mem_train_mb": peaks["train"],
    }


def bench_scaling(model, tok, quick: bool, out: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from atmanrl.saliency import compute_saliency

    lengths = [64, 128, 256] if quick else [64, 128, 256, 512]
    batches = [1, 4, 8] if quick else [1, 2, 4, 8, 16]
    steps = 5
    by_len = {}
    for n in lengths:
        traces, _ = fixed_length_traces(model, tok, 4, n)
        by_len[n] = (
            timed(compute_saliency, model, tok, traces, "learned", preset="reward", steps=steps)[0] / 4
        )
    traces, _ = fixed_length_traces(model, tok, max(batches), 128)
    by_batch = {}
    for b in batches:
        by_batch[b] = (
            timed(
                compute_saliency,
                model,
                tok,
                traces[:b],
                "learned",
                preset="reward",
                steps=steps,
                batch_size=b,
            )[0]
            / b
        )
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    ax[0].plot(list(by_len), list(by_len.values()), marker="o")
    ax[0].set(xlabel="CoT tokens", ylabel=f"s per trace ({steps} mask steps)", title="time vs CoT length")
    ax[1].plot(list(by_batch), list(by_batch.values()), marker="o")
    ax[1].set(xlabel="batch size", ylabel="s per trace", title="time vs batch size (128-token CoT)")
    for a in ax:
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "scaling.png", dpi=110)
    return {
        "scaling_s_per_trace_by_cot_tokens": by_len,
        "scaling_s_per_trace_by_batch": by_batch,
        "scaling_plot": str(out / "scaling.png"),
    }


def reward_mask_options(parser: argparse.ArgumentParser, flag: str, text: str, one: bool = False):
    """A flag's JSON list of option dicts for the reward's mask (on top of preset `reward`), or with `one` a single
    dict, each checked by building the method, so a bad one fails before any model work with a message that names
    the flag."""
    from atmanrl.errors import UserError
    from atmanrl.saliency import make_method

    try:
        options = json.loads(text)
    except json.JSONDecodeError as e:
        parser.error(f"{flag} is not valid JSON ({e.msg}): {text}")
    items = [options] if one else options
    if not isinstance(items, list) or not all(isinstance(o, dict) for o in items):
        example = '{"steps": 8, "lr": 19}'
        parser.error(
            f"{flag} must be "
            + (
                f"a JSON object, e.g. '{example}'"
                if one
                else f"a JSON list of option dicts, e.g. '[{example}]'"
            )
        )
    for o in items:
        try:
            make_method("learned", **{"preset": "reward", **o})  # a "preset" key replaces the reward's
        except (UserError, TypeError) as e:
            parser.error(f"{flag}: {e}")
    return options


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller sizes, same keys (about 7 minutes)")
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--only", default=None, help="comma-separated subset: p1,p2,p3,p4,p5,paper,mem,scaling")
    p.add_argument(
        "--p5-also",
        default="[]",
        help="p5 also times these settings of the reward's mask against the same leave-one-out run, e.g. "
        '\'[{"steps": 8, "lr": 19}]\' (no goal; written as p5_also)',
    )
    args = p.parse_args(argv)
    also = reward_mask_options(p, "--p5-also", args.p5_also)
    if also and args.only and "p5" not in args.only.split(","):
        p.error("--p5-also needs p5: add it to --only")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    only = (
        set(args.only.split(",")) if args.only else {"p1", "p2", "p3", "p4", "p5", "paper", "mem", "scaling"}
    )

    from atmanrl import load_model

    torch.manual_seed(0)
    model, tok = load_model()
    results: dict = {
        "quick": args.quick,
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "torch_threads": torch.get_num_threads(),
    }
    t0 = time.time()
    if "p1" in only:
        results |= bench_p1(model, tok, args.quick)
    if "p2" in only:
        results |= bench_p2(model, tok, args.quick)
    if "p4" in only:
        results |= bench_p4(model, tok, args.quick)
    if "p5" in only:
        results |= bench_p5(model, tok, args.quick, also)
    if "paper" in only:
        results |= bench_paper(model, tok, args.quick)
    if "scaling" in only:
        results |= bench_scaling(model, tok, args.quick, out)
    if "mem" in only:
        results |= bench_mem(model, tok)
    if "p3" in only:
        import shutil
        import tempfile

        work = Path(tempfile.mkdtemp(prefix="atmanrl-bench-"))
        try:
            results |= bench_p3(args.quick, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    latest = out / "latest.json"
    if args.only and latest.exists():  # a partial run updates the keys it measured
        results = json.loads(latest.read_text()) | results
    results["goals"] = {
        k: {"goal": f"{op} {v}", "met": (results[k] <= v if op == "<=" else results[k] >= v)}
        for k, (op, v) in GOALS.items()
        if k in results
    }
    results["total_s"] = time.time() - t0
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    for k, g in results["goals"].items():
        print(f"{k:32s} {results[k]:8.3f}  goal {g['goal']:7s} {'met' if g['met'] else 'NOT met'}")
    print(f"wrote {out / 'latest.json'} in {results['total_s']:.0f}s")
    return results


if __name__ == "__main__":
    main()
