"""Shared fixtures: a local tokenizer (the embedded model's) and tiny random models built from configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, LlamaConfig, Qwen2Config

from atmanrl.models import materialize_embedded, prepare_tokenizer

# The read-only data beside the checkout (../shared/data), or wherever ATMANRL_SHARED_DATA points.
SHARED_DATA = Path(
    os.environ.get("ATMANRL_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
)
ARCHS = ("llama", "qwen2", "gpt2")


@pytest.fixture(scope="session")
def embedded_dir() -> Path:
    return materialize_embedded()


@pytest.fixture(scope="session")
def real_model():
    """The embedded SmolLM2-135M-Instruct (float32, CPU), loaded once per session."""
    from atmanrl.models import load_model

    return load_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def tokenizer(embedded_dir):
    return prepare_tokenizer(AutoTokenizer.from_pretrained(embedded_dir))


def tiny_config(arch: str, vocab_size: int):
    common = dict(vocab_size=vocab_size, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    if arch == "llama":
        return LlamaConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            **common,
        )
    if arch == "qwen2":
        return Qwen2Config(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            **common,
        )
    if arch == "gpt2":
        return GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=512, **common)
    raise ValueError(arch)


def make_tiny_model(arch: str, vocab_size: int, attn_implementation: str = "eager", seed: int = 0):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(
        tiny_config(arch, vocab_size), attn_implementation=attn_implementation
    )
    return model.eval()


@pytest.fixture(params=ARCHS)
def tiny_model(request, tokenizer):
    return make_tiny_model(request.param, len(tokenizer))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"{SHARED_DATA} is missing: tests read GSM8K/MMLU from ../shared/data")
    return SHARED_DATA


def _saved_tiny(tmp_path_factory, tokenizer, arch: str) -> Path:
    d = tmp_path_factory.mktemp(f"tiny-{arch}")
    make_tiny_model(arch, len(tokenizer)).save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, tokenizer) -> Path:
    """A tiny random Llama with the embedded tokenizer, saved as a local model folder (for the CLI)."""
    return _saved_tiny(tmp_path_factory, tokenizer, "llama")


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory, tokenizer) -> Path:
    return _saved_tiny(tmp_path_factory, tokenizer, "qwen2")
