"""GPU benchmark (`make bench-gpu`): the saliency methods on model shapes with random weights, no download.

For each shape (the embedded SmolLM2-135M's and Llama-3.2-3B's, built from their configs with random weights;
timings do not depend on the weights) it reports, on one batch of rollouts (default 8 x [150-token prompt,
267-token CoT, 3-token answer], the 3B measurement of docs/performance.md):
- the generation time of the batch (HF `generate`, forced to the CoT length);
- each saliency method's time and peak memory above what is allocated just before its call. `learned` is the
  saliency reward's mask (preset "reward", what a GRPO step computes), `learned_attribution` the attribution
  default (30 steps and a leave-one-out hop); the reward's mask is also split into its fixed passes and its time
  per step;
- kernel launches per mask step of the learned mask (CUDA only: torch.profiler, the difference between two
  step counts, so the fixed passes cancel), eager and with the step replayed as a CUDA graph (the default), and
  the largest score difference between the two;
- whether SDPA's gradient into a float attention mask matches eager attention's on this device (attention.py
  falls back to eager attention on CUDA when the bias needs a gradient);
- the published mask (presets paper and paper_answer): time per step, fixed passes, and a whole 200-step call;
- with --grpo: a 5-step GRPO timing of both embedded-model recipes (needs TRL, datasets, math-verify and the
  embedded GGUF: see docs/performance.md for a bare GPU machine).

Everything also runs on CPU (`--device cpu --shapes tiny`), the way the tests run it.

    python benchmarks/gpu.py                                  # both shapes on the GPU
    python benchmarks/gpu.py --grpo                           # plus the GRPO step ratio on the embedded model
    python benchmarks/gpu.py --device cpu --shapes tiny --out /tmp/gpu_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SHAPES: dict[str, dict] = {
    "smollm2-135m": dict(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        rope_theta=100000.0,
        tie_word_embeddings=True,
    ),
    "llama-3.2-3b": dict(
        hidden_size=3072,
        intermediate_size=8192,
        num_hidden_layers=28,
        num_attention_heads=24,
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=128256,
        rope_theta=500000.0,
        tie_word_embeddings=True,
    ),
    # for the tests: the same code path in seconds on a CPU
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=512,
        tie_word_embeddings=True,
    ),
}
METHODS = ("learned", "leave_one_out", "atman", "attention_gradient")
REWARD = {"preset": "reward"}  # the saliency reward's mask, as SaliencyReward builds it


def build(shape: str, device: torch.device, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(**SHAPES[shape], max_position_embeddings=4096)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    return model.eval()


def rows(vocab: int, batch: int, prompt: int, cot: int, answer: int = 3, seed: int = 0):
    """Encoded rollouts of random token ids: what `saliency.encode` gives for real text."""
    from atmanrl.masked import Encoded, Token

    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batch):
        ids = torch.randint(10, vocab, (prompt + cot + answer,), generator=g).tolist()
        tokens = [Token("x", i, i + 1) for i in range(cot)]
        out.append(
            Encoded(ids, prompt, tokens, prompt + cot, list(range(prompt + cot, prompt + cot + answer)))
        )
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(device, fn):
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def launches(device, fn) -> int | None:
    """CUDA kernel launches (graph launches count one each) issued by fn()."""
    if device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        sync(device)
    names = (
        "cudaLaunchKernel",
        "cudaLaunchKernelExC",
        "cuLaunchKernel",
        "cuLaunchKernelEx",
        "cudaGraphLaunch",
    )
    return sum(1 for e in prof.events() if e.name in names)


def sdpa_mask_grad_ok(device: torch.device, dtype: torch.dtype) -> bool | str:
    """Does SDPA's gradient into a float attention mask match eager attention's here (to dtype tolerance)?
    An SDPA backward that refuses the mask gradient gives its error message."""
    import torch.nn.functional as F

    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(2, 4, 64, 64, device=device, dtype=dtype, generator=g) for _ in range(3))
    grads = []
    for fn in (
        lambda m: F.scaled_dot_product_attention(q, k, v, attn_mask=m),
        lambda m: torch.softmax((q @ k.transpose(-1, -2)) / 8 + m, -1, dtype=torch.float32).to(dtype) @ v,
    ):
        mask = torch.zeros(2, 1, 64, 64, device=device, dtype=dtype, requires_grad=True)
        try:
            (fn(mask).float() * torch.arange(64, device=device)).sum().backward()
        except RuntimeError as e:
            return str(e).splitlines()[0]
        grads.append(mask.grad.float())
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-4
    return bool(torch.allclose(grads[0], grads[1], atol=tol * grads[1].abs().max().item(), rtol=0))


def bench_shape(shape: str, device: torch.device, dtype: torch.dtype, args) -> dict:
    from atmanrl.saliency import frozen, make_method, score_encoded

    model = build(shape, device, dtype)
    vocab = model.config.vocab_size
    encs = rows(vocab, args.batch, args.prompt, args.cot)
    res: dict = {"shape": shape, "params_M": sum(p.numel() for p in model.parameters()) / 1e6}

    if not args.no_generate:
        prompt = torch.tensor([e.ids[: args.prompt] for e in encs], device=device)

        def generate(n: int):
            with torch.no_grad():
                return model.generate(
                    prompt, max_new_tokens=n, min_new_tokens=n, do_sample=True, pad_token_id=0
                )

        generate(4)  # warm-up
        res["generate_s"], _ = timed(device, lambda: generate(args.cot))

    built: dict[str, object] = {}

    def run(method: str, **cfg):
        # one built method per setting, as SaliencyReward keeps one: the learned mask reuses its step graph
        m = built.setdefault(f"{method} {sorted(cfg.items())}", make_method(method, **cfg))
        with frozen(model):
            return score_encoded(m, model, encs, 0, device)

    scores = {}
    # "learned" is the saliency reward's mask (preset "reward": 15 steps, one hop), what a GRPO step computes;
    # "learned_attribution" is the attribution default (30 steps and a leave-one-out hop over the top targets)
    runs = [
        ("learned_eager", "learned", {**REWARD, "cuda_graph": False}),
        ("learned", "learned", REWARD),
        ("learned_attribution", "learned", {}),
    ] + [(m, m, {}) for m in args.methods.split(",") if m != "learned"]
    for name, method, cfg in runs:
        # the first call warms up (and captures the learned mask's step graph); the timed one is a later batch of
        # the same shapes, as in training, where it reuses the graph
        res[f"{name}_first_s"], _ = timed(device, lambda method=method, cfg=cfg: run(method, **cfg))
        if device.type == "cuda":
            # above what is held just before this call (earlier methods keep their captured graphs in `built`)
            torch.cuda.reset_peak_memory_stats()
            base_mem = torch.cuda.memory_allocated()
        seconds, out = timed(device, lambda method=method, cfg=cfg: run(method, **cfg))
        res[f"{name}_s"] = seconds
        if device.type == "cuda":
            res[f"{name}_peak_mb"] = (torch.cuda.max_memory_allocated() - base_mem) / 2**20
        res[f"{name}_finite"] = bool(torch.isfinite(out[0]).all())
        scores[name] = out[0]
    if device.type == "cuda":  # elsewhere both runs are eager: nothing to compare
        res["learned_graph_max_score_diff"] = float((scores["learned"] - scores["learned_eager"]).abs().max())
    if "generate_s" in res:
        res["learned_over_generate"] = res["learned_s"] / res["generate_s"]
    res["learned_eager_over_graph"] = res["learned_eager_s"] / res["learned_s"]
    if "leave_one_out_s" in res:
        res["loo_over_learned"] = res["leave_one_out_s"] / res["learned_s"]

    # where the learned mask's time goes: the fixed passes (prefix, the two reference log-probs) against the
    # steps, from two step counts (each timed on its second call, so the graph is reused as in training)
    lo, hi = 3, 7
    step_s = {}
    for n in (lo, hi):
        run("learned", **REWARD, steps=n)
        step_s[n], _ = timed(device, lambda n=n: run("learned", **REWARD, steps=n))
    res["learned_per_step_s"] = (step_s[hi] - step_s[lo]) / (hi - lo)
    res["learned_fixed_s"] = step_s[lo] - lo * res["learned_per_step_s"]
    # the published mask (docs/paper.md): its time per step and fixed passes the same way, exact and answer rows;
    # a whole call is `paper*_fixed_s + 200 * paper*_per_step_s`
    for name, preset in (("paper", "paper"), ("paper_answer", "paper_answer")):
        t = {}
        for n in (1, 3):
            run("learned", preset=preset, steps=n)
            t[n], _ = timed(device, lambda n=n, preset=preset: run("learned", preset=preset, steps=n))
        res[f"{name}_per_step_s"] = (t[3] - t[1]) / 2
        res[f"{name}_fixed_s"] = t[1] - res[f"{name}_per_step_s"]
        res[f"{name}_200_steps_s"] = res[f"{name}_fixed_s"] + 200 * res[f"{name}_per_step_s"]
    res["paper_answer_per_step_over_reward"] = res["paper_answer_per_step_s"] / res["learned_per_step_s"]
    if device.type == "cuda":
        # a new setting each: both counts include the capture
        for name, cfg in (("eager", {**REWARD, "cuda_graph": False}), ("graph", REWARD)):
            few = launches(device, lambda cfg=cfg: run("learned", steps=lo + 1, **cfg))
            many = launches(device, lambda cfg=cfg: run("learned", steps=hi + 1, **cfg))
            res[f"launches_per_mask_step_{name}"] = (many - few) / (hi - lo)
        res["sdpa_mask_grad_matches_eager"] = sdpa_mask_grad_ok(device, dtype)
    return res


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto (cuda if present), cuda or cpu")
    p.add_argument(
        "--shapes", default="smollm2-135m,llama-3.2-3b", help=f"comma-separated: {', '.join(SHAPES)}"
    )
    p.add_argument(
        "--dtype", default="auto", help="auto (bfloat16 on cuda, float32 on cpu), bfloat16, float32"
    )
    p.add_argument("--batch", type=int, default=8, help="rollouts in the batch")
    p.add_argument("--prompt", type=int, default=150, help="prompt tokens")
    p.add_argument("--cot", type=int, default=267, help="CoT tokens")
    p.add_argument(
        "--methods", default=",".join(METHODS), help="saliency methods to time (learned always runs)"
    )
    p.add_argument("--no-generate", action="store_true", help="skip the generation timing")
    p.add_argument(
        "--grpo", action="store_true", help="also the 5-step GRPO timing of both recipes (embedded model)"
    )
    p.add_argument("--grpo-steps", type=int, default=5)
    p.add_argument("--out", default=str(HERE / "results" / "gpu.json"))
    args = p.parse_args(argv)

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here (use --device cpu)")
    dtype = (
        (torch.bfloat16 if device.type == "cuda" else torch.float32)
        if args.dtype == "auto"
        else getattr(torch, args.dtype)
    )
    results: dict = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu {platform.machine()}",
        "torch": torch.__version__,
        "dtype": str(dtype).removeprefix("torch."),
        "batch": f"{args.batch} x ({args.prompt} prompt + {args.cot} CoT + 3 answer tokens)",
        "shapes": {},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for shape in args.shapes.split(","):
        if shape not in SHAPES:
            raise SystemExit(f"--shapes: unknown shape {shape!r}; known: {', '.join(SHAPES)}")
        results["shapes"][shape] = r = bench_shape(shape, device, dtype, args)
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the shape's model is gone with bench_shape's frame
        print(json.dumps(r), flush=True)
        out.write_text(json.dumps(results, indent=2) + "\n")  # a later failure keeps what was measured
    if args.grpo:
        from run import bench_p3

        extra = ["--use_cpu", "false"] if device.type == "cuda" else []
        if device.type == "cuda":
            extra += ["--bf16", "true", "--dtype", "bfloat16", "--per_device_train_batch_size", "32"]
        with tempfile.TemporaryDirectory(prefix="atmanrl-bench-gpu-") as work:
            results["grpo"] = bench_p3(False, Path(work), tuple(extra), steps=args.grpo_steps)
        print(json.dumps(results["grpo"]), flush=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
