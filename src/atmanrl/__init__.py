"""atmanrl: faithful chain-of-thought training with AtManRL saliency rewards.

`import atmanrl` loads neither torch nor transformers (so `atmanrl --help` answers at once); `load_model` and the
other heavy names load their modules on first use.
"""

from typing import Any

from .errors import UserError
from .options import DEFAULT_MODEL

__version__ = "0.8.0"
__all__ = ["DEFAULT_MODEL", "UserError", "load_model", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "load_model":
        from .models import load_model

        return load_model
    raise AttributeError(f"module 'atmanrl' has no attribute {name!r}")
