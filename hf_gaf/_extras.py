"""Install extras: which wing of hf_gaf needs which packages, and the one-line error when they are missing."""

from __future__ import annotations

import importlib.util

_HF = ("transformers", "accelerate")
_DETECTION = ("torchvision", "datasets", "pycocotools", "defusedxml")
#: the import names each extra of pyproject.toml provides (``recipes`` includes ``hf`` and ``detection``)
EXTRAS = {
    "hf": _HF,
    "detection": _DETECTION,
    "recipes": (*_HF, *_DETECTION, "timm", "evaluate", "sklearn", "matplotlib"),
}


def require_extra(module: str, extra: str) -> None:
    """Raise ``ImportError`` in one line, naming the extra to install, when a package of ``extra``
    (see :data:`EXTRAS`) is not installed; ``module`` is the wing that needs it."""
    missing = [name for name in EXTRAS[extra] if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"{module} needs {', '.join(missing)}: pip install 'hf_gaf[{extra}]'")
