"""The three "how to add" recipes of docs/architecture.md, each shown by adding a toy one through the public API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from atmanrl.data import TASKS, Example, Task, get_task, register_task
from atmanrl.masked import MaskedBatch, masked_logprob
from atmanrl.rewards import REWARDS, completion_text, get_reward, register_reward
from atmanrl.saliency import METHODS, SaliencyMethod, compute_saliency, register
from conftest import make_tiny_model
from test_saliency import TRACES


@pytest.fixture
def registered():
    """Remove what a test registers, so the registries are as they were for every other test."""
    before = {id(r): dict(r) for r in (METHODS, REWARDS, TASKS)}
    yield
    for r in (METHODS, REWARDS, TASKS):
        r.clear()
        r.update(before[id(r)])


def test_add_a_saliency_method(registered, tokenizer):
    @register
    @dataclass
    class HalfRemoved(SaliencyMethod):
        """Toy: the drop of log p(A) when every CoT token's bias is -strength (one number, spread evenly)."""

        method_name: ClassVar[str] = "half_removed"
        strength: float = 5.0

        def scores(self, model, batch: MaskedBatch, prefix, base_lp, removed_lp=None):
            values = torch.full(batch.cot_valid.shape, -self.strength, device=batch.input_ids.device)
            lp = masked_logprob(model, batch, prefix, batch.spread(values), use_cache=self.use_cache)
            return (base_lp - lp)[:, None].expand_as(values) / batch.cot_valid.sum(-1, keepdim=True)

    model = make_tiny_model("llama", len(tokenizer))
    sals = compute_saliency(model, tokenizer, TRACES, "half_removed", strength=3.0)
    assert [s.method for s in sals] == ["half_removed"] * len(TRACES)
    assert all(len(s.scores) == len(s.tokens) and len(set(s.scores)) == 1 for s in sals)
    assert sals[0].config["strength"] == 3.0


def test_add_a_reward(registered):
    @register_reward("short_cot")
    def short_cot(max_chars: int = 40):
        def reward(prompts, completions, **columns) -> list[float]:
            return [1.0 if len(c.split("####")[0]) <= max_chars else 0.0 for c in completions]

        return reward

    fn = get_reward("short_cot", max_chars=10)
    assert fn(["p", "p"], ["2+3=5\n#### 5", "a long way round to five\n#### 5"], gold=["5", "5"]) == [
        1.0,
        0.0,
    ]


def test_a_reward_with_its_own_option_trains_through_a_recipe(registered, tmp_path, tiny_dir, capsys):
    """What the "add a reward" recipe promises under `atmanrl train`: the factory gets only what it declares
    (not the task's settings), and `reward_options` sets its own option."""
    import json

    from atmanrl.cli import main
    from test_train import _read_state, tiny_recipe

    seen = {}

    @register_reward("short_cot")
    def short_cot(max_chars: int = 40):
        seen["max_chars"] = max_chars

        def reward(prompts, completions, **columns) -> list[float]:
            texts = [completion_text(c) for c in completions]  # strings, or chat messages from TRL
            return [1.0 if len(t.split("####")[0]) <= max_chars else 0.0 for t in texts]

        return reward

    recipe = tiny_recipe(
        tmp_path,
        tiny_dir,
        rewards=["correctness", "short_cot"],
        reward_weights=[1.0, 1.0],
        reward_options={"short_cot": {"max_chars": 7}},
        max_steps=1,
    )
    assert main(["train", str(recipe), "--dry-run"]) == 0 and seen["max_chars"] == 7
    assert main(["train", str(recipe)]) == 0
    logged = {k for h in _read_state(tmp_path / "run")["log_history"] for k in h}
    assert "rewards/short_cot/mean" in logged
    capsys.readouterr()
    bad = ["train", str(recipe), "--dry-run", "--reward_options", json.dumps({"short_cot": {"nope": 1}})]
    assert main(bad) == 2 and "reward 'short_cot' has no option ['nope']" in capsys.readouterr().err


def test_add_a_task(registered):
    @register_task
    class Doubling(Task):
        name = "doubling"

        def rows(self, data_dir, split, seed, limit, skipped):
            for i in range(20):
                yield Example(f"dbl-{split}-{i}", f"What is twice {i}?", str(2 * i), self.name)

    task = get_task("doubling", fewshot=False)
    examples = task.load(split="test", limit=5, seed=1)
    assert len(examples) == 5 and len({e.id for e in examples}) == 5
    assert task.messages(examples[0])[-1]["content"].startswith("Question: What is twice")
    ex = examples[0]
    assert task.is_correct(task.parse(f"so {ex.gold}\n#### {ex.gold}").value, ex.gold)
    assert get_reward("correctness", task="doubling")(["p"], [f"#### {ex.gold}"], gold=[ex.gold]) == [1.0]
