"""Training: recipes, a short GRPO run with the saliency reward, resume after kill, two processes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from atmanrl.errors import UserError
from atmanrl.train import cli, parse_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*/*.yaml"))
RECIPES = [r for r in RECIPES if r.parent.name != "accelerate"]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_recipe_passes_dry_run_or_names_what_this_machine_lacks(recipe, capsys):
    rc = cli([str(recipe), "--dry-run"])
    out = capsys.readouterr().out
    assert "recipe keys: ok" in out and "rewards:" in out
    problems = [line for line in out.splitlines() if line.startswith("PROBLEM")]
    assert rc == (1 if problems else 0)
    if "smollm2" in recipe.parent.name:
        assert rc == 0  # the CPU recipes run here
    else:  # the GPU recipes need vLLM, the Hub's training splits and the 3B weights, which this machine lacks
        allowed = ("PROBLEM use_vllm", "PROBLEM data", "PROBLEM model: meta-llama/")
        assert all(p.startswith(allowed) for p in problems), problems


@pytest.mark.parametrize("recipe", ["gsm8k_atmanrl.yaml", "gsm8k_paper.yaml"])
def test_the_gpu_recipe_checks_pass_without_vllm_on_local_data_and_a_local_model(
    recipe, shared_data, tiny_dir, capsys
):
    argv = [
        "--dry-run",
        "--use_vllm",
        "false",
        "--data_dir",
        str(shared_data / "gsm8k"),
        "--model",
        str(tiny_dir),
    ]
    assert cli([f"llama-3.2-3b-instruct/{recipe}", *argv]) == 0, capsys.readouterr().out


def test_outcome_and_atmanrl_recipes_differ_only_in_saliency():
    """Every saliency recipe has an outcome-only twin, ours and the published setting's own baseline alike."""
    pairs = [
        (a, a.with_name(a.name.replace("atmanrl", "outcome"))) for a in ROOT.glob("recipes/*/*_atmanrl.yaml")
    ]
    pairs += [
        (a, a.with_name(a.name.replace("paper", "paper_outcome")))
        for a in ROOT.glob("recipes/*/*_paper.yaml")
    ]
    assert len(pairs) == 6
    for a, outcome in pairs:
        x, y = yaml.safe_load(a.read_text()), yaml.safe_load(outcome.read_text())
        diff = {k for k in x.keys() | y.keys() if x.get(k) != y.get(k)}
        assert diff <= {"rewards", "reward_weights", "output_dir"} | {
            k for k in x if k.startswith("saliency_")
        }
        assert x["rewards"] == y["rewards"] + ["saliency"], a.name


def test_unknown_recipe_key_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((RECIPES[0]).read_text() + "\nnot_a_key: 3\n")
    with pytest.raises(UserError, match="unknown keys not_a_key"):
        parse_recipe(bad, [])


def test_a_bad_advantage_scaling_is_named_before_any_training():
    with pytest.raises(UserError, match="scale_rewards 'std' is not one of group, batch, none"):
        parse_recipe("smollm2-135m/arith_outcome.yaml", ["--scale_rewards", "std"])
    _, training_args, _ = parse_recipe("smollm2-135m/arith_outcome.yaml", ["--scale_rewards", "group"])
    assert training_args.scale_rewards == "group"


def test_unknown_reward_in_recipe(tmp_path):
    with pytest.raises(UserError, match="correctness"):
        cli([str(RECIPES[0]), "--dry-run", "--rewards", "correctness", "nope", "--reward_weights", "1", "1"])


def tiny_recipe(tmp_path, tiny_dir, **extra) -> Path:
    recipe = {
        "model_name_or_path": str(tiny_dir),
        "task": "arith",
        "limit": 32,
        "split": "train",
        "rewards": ["correctness", "format", "saliency"],
        "reward_weights": [1.0, 0.2, 0.5],
        "saliency_steps": 2,
        "saliency_correct_only": False,
        "min_reasoning_tokens": 1,
        "output_dir": str(tmp_path / "run"),
        "use_cpu": True,
        "bf16": False,
        "seed": 0,
        "max_steps": 2,
        "per_device_train_batch_size": 4,
        "num_generations": 4,
        "max_completion_length": 12,
        "learning_rate": 1e-4,
        "gradient_checkpointing": False,
        "logging_steps": 1,
        "save_steps": 100,
        "report_to": [],
        "temperature": 1.0,
    } | extra
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _read_state(run: Path) -> dict:
    ckpts = sorted(run.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return json.loads((ckpts[-1] / "trainer_state.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("peft", [False, True], ids=["full", "lora"])
def test_tiny_grpo_run_logs_saliency_and_leaves_checkpoint(tmp_path, tiny_dir, monkeypatch, peft, capsys):
    # Completions of a random tiny model rarely parse; a patched parser makes every rollout eligible, so the
    # saliency reward really runs inside the GRPO step.
    from atmanrl.data import Arith, Parsed

    def parse_last_char_as_answer(self, text):
        if len(text) < 3:
            return Parsed((0, len(text)))
        cut = len(text) - 1
        return Parsed((0, cut), (cut, len(text)), "1", (cut, len(text)))

    monkeypatch.setattr(Arith, "parse", parse_last_char_as_answer)
    extra = (
        {"use_peft": True, "lora_r": 4, "lora_target_modules": ["q_proj", "v_proj"]}
        if peft
        else {"log_completions": True, "eval_strategy": "steps", "eval_steps": 2, "eval_limit": 4}
    )
    recipe = tiny_recipe(tmp_path, tiny_dir, **extra)
    capsys.readouterr()
    assert cli([str(recipe)]) == 0
    out = capsys.readouterr().out  # not a terminal: one plain line per logged step, not rich's redrawn tables
    assert "step 2/2:" in out and "rewards/saliency/mean=" in out and len(out.splitlines()) < 40
    state = _read_state(tmp_path / "run")
    assert state["global_step"] == 2
    logged = {k for h in state["log_history"] for k in h}
    assert "rewards/saliency/mean" in logged
    assert {"saliency/seconds", "saliency/eligible_frac"} <= logged
    assert (tmp_path / "run" / "training_curves.png").stat().st_size > 1000
    if peft:
        assert (tmp_path / "run" / "adapter_config.json").exists()
    else:  # watched while it runs: held-out evaluation, and every rollout with its saliency in the logs
        import pandas as pd

        assert any(k.startswith("eval_") for k in logged)
        table = pd.read_parquet(tmp_path / "run" / "completions" / "completions_00002.parquet")
        assert {"saliency", "saliency_gap", "saliency_needed"} <= set(table.columns)
        assert len(table) == 4


@pytest.mark.slow
def test_kill_and_resume(tmp_path, tiny_dir):
    recipe = tiny_recipe(
        tmp_path,
        tiny_dir,
        rewards=["correctness", "format"],
        reward_weights=[1.0, 0.2],
        max_steps=6,
        save_steps=1,
    )
    env = os.environ | {"ATMANRL_NO_PROGRESS": "1"}
    cmd = [sys.executable, "-m", "atmanrl.cli", "train", str(recipe)]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    run = tmp_path / "run"
    deadline = time.time() + 240
    while time.time() < deadline and not (run / "checkpoint-2" / "trainer_state.json").exists():
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (run / "checkpoint-2").exists(), "the run never reached step 2"
    killed_at = _read_state(run)["global_step"]
    assert killed_at < 6
    out = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert _read_state(run)["global_step"] == 6


@pytest.mark.slow
def test_two_processes_with_accelerate(tmp_path, tiny_dir):
    # generation_batch_size = 2 per device x world size must be divisible by num_generations = 4: a single
    # process would be refused at parse time, so success proves that two ranks ran. MULTI_CPU would need MPI;
    # MULTI_GPU on a machine without GPUs runs torchrun with the gloo backend.
    recipe = tiny_recipe(tmp_path, tiny_dir, per_device_train_batch_size=2, num_generations=4)
    env = os.environ | {"ATMANRL_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ROOT / "recipes" / "accelerate" / "cpu2.yaml"),  # the shipped config, as docs/training.md runs it
        "-m",
        "atmanrl.cli",
        "train",
        str(recipe),
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert _read_state(tmp_path / "run")["global_step"] == 2


# ------------------------------------------------------------------------ the command line a user meets


def test_help_exits_0_and_shows_atmanrls_keys_before_trls(capsys):
    from atmanrl.cli import main

    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--saliency_margin" in out and "--help-all" in out and "alias --model" in out
    fewshot = next(line for line in out.splitlines() if line.strip().startswith("--fewshot "))
    assert fewshot.endswith("(default: true)")
    assert len(out.splitlines()) < 80  # atmanrl's keys and a pointer, not TRL's 1,200 lines
    assert main(["train", "--help-all"]) == 0
    out = capsys.readouterr().out
    assert (
        out.index("--saliency_margin") < out.index("--output_dir OUTPUT_DIR") < out.index("--learning_rate")
    )
    assert main(["train", "-h"]) == 0
    capsys.readouterr()
    assert main(["train"]) == 2
    assert len(capsys.readouterr().out.splitlines()) < 30  # a usage, not 1,400 lines


def test_recipe_by_name_by_config_and_after_options(capsys):
    name = "smollm2-135m/arith_outcome.yaml"
    assert cli([name, "--dry-run"]) == 0
    assert cli(["--seed", "3", "--dry-run", str(ROOT / "recipes" / name)]) == 0
    assert cli(["--max_steps", "2", "--config", name, "--dry-run"]) == 0
    assert "max_steps=2" in capsys.readouterr().out


@pytest.mark.parametrize(
    "override, reason",
    [
        (["--use_vllm", "true"], "use_vllm: vLLM is not installed"),
        (["--attn_implementation", "flash_attention_2"], "attn_implementation"),
        (["--task", "gsm8k", "--data_dir", "/nonexistent"], "NOT reachable"),
    ],
    ids=["vllm", "attention", "data"],
)
def test_a_dry_run_that_cannot_start_exits_non_zero(override, reason, capsys):
    import importlib.util

    if override[0] == "--use_vllm" and importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    assert cli(["smollm2-135m/arith_atmanrl.yaml", "--dry-run", *override]) == 1
    out = capsys.readouterr().out
    problem = [line for line in out.splitlines() if line.startswith("PROBLEM")]
    assert len(problem) == 1 and reason in problem[0]


def test_a_dry_run_checks_the_eval_split_and_dtype_auto(capsys):
    assert (
        cli(["smollm2-135m/arith_atmanrl.yaml", "--dry-run", "--eval_strategy", "steps", "--dtype", "auto"])
        == 0
    )
    out = capsys.readouterr().out
    assert "eval data: arith/test reachable, 64 examples" in out and "dtype: float32" in out


def test_resume_from_checkpoint_that_does_not_exist_is_refused(tmp_path, tiny_dir):
    recipe = tiny_recipe(tmp_path, tiny_dir, rewards=["correctness"], reward_weights=[1.0])
    with pytest.raises(UserError, match="no such checkpoint"):
        cli([str(recipe), "--resume_from_checkpoint", str(tmp_path / "nope")])


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["generate", "--help"], ["--version"]])
def test_help_loads_neither_torch_nor_transformers(argv):
    import subprocess
    import sys

    code = (
        "import sys\nfrom atmanrl.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print('HEAVY', sorted(m for m in ('torch', 'transformers', 'trl') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in out.stdout, out.stdout[-500:] + out.stderr[-500:]


def test_a_dry_run_refuses_a_model_folder_that_does_not_exist(capsys, tmp_path, monkeypatch):
    from atmanrl.cli import main

    recipe = "smollm2-135m/arith_atmanrl.yaml"
    assert main(["train", recipe, "--model_name_or_path", "./nope-model", "--dry-run"]) == 1
    assert "PROBLEM model: no such folder: ./nope-model" in capsys.readouterr().out
    # a Hub id that is not cached, with the Hub forbidden: said so, exit 1
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    assert main(["train", recipe, "--model", "someone/not-cached-model", "--dry-run"]) == 1
    assert "HF_HUB_OFFLINE=1 forbids the download" in capsys.readouterr().out
