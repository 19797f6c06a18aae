"""safedose: safety-tune instruction-following LLMs and measure the price."""

from safedose.errors import InputError, SafedoseError

__version__ = "0.1.0"
__all__ = ["InputError", "SafedoseError", "__version__"]
