"""atmanrl: faithful chain-of-thought training with AtManRL saliency rewards."""

from .errors import UserError
from .models import DEFAULT_MODEL, load_model

__version__ = "0.1.0"
__all__ = ["DEFAULT_MODEL", "UserError", "load_model", "__version__"]
