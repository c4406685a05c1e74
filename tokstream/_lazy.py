"""A module bound now and imported on first use (numpy, which ``import tokstream``
and an idle ``Client`` never need: about 12 MiB of RSS).

``lazy_module("numpy", globals())`` returns a stand-in. The first attribute read
on it, in any module that asked for the same name, imports the real module
(under the import system's lock, so threads may race it) and rebinds every such
global to the real module, so each later ``np.x`` is an ordinary module
attribute read, with no per-access cost. ``sys.modules`` is left alone: the
process's other ``import numpy`` statements behave as always.

Write it as::

    if TYPE_CHECKING:
        import numpy as np
    else:
        np = lazy_module("numpy", globals())

and never keep the stand-in anywhere but a module global (a default argument or
an attribute would keep going through it).
"""

from __future__ import annotations

import importlib
import sys
import threading
import types
from typing import Any

__all__ = ["lazy_module"]

_lock = threading.Lock()
_stand_ins: dict[str, _LazyModule] = {}


class _LazyModule(types.ModuleType):
    """Stands in for a module until an attribute is read, then rebinds the globals."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._namespaces: list[dict[str, Any]] = []

    def __getattr__(self, attr: str) -> Any:
        # Called only for names the stand-in lacks, that is, the real module's.
        real = load(self)
        return getattr(real, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self.__name__!r}, not imported yet>"


def lazy_module(name: str, namespace: dict[str, Any]) -> Any:
    """Return a stand-in for module ``name``, to bind to a global in ``namespace``.

    Args:
        name: The module's full name (``"numpy"``).
        namespace: The calling module's ``globals()``; its globals bound to the
            stand-in are rebound to the real module when it loads.

    Returns:
        The real module if it is already imported, else the stand-in.
    """
    real = _loaded(name)
    if real is not None:
        return real
    with _lock:
        stand_in = _stand_ins.get(name)
        if stand_in is None:
            stand_in = _stand_ins[name] = _LazyModule(name)
        stand_in._namespaces.append(namespace)
    return stand_in


def load(stand_in: types.ModuleType) -> types.ModuleType:
    """Import the real module behind ``stand_in`` and rebind its globals (idempotent)."""
    if not isinstance(stand_in, _LazyModule):
        return stand_in
    real = importlib.import_module(stand_in.__name__)
    with _lock:
        for namespace in stand_in._namespaces:
            for key, value in list(namespace.items()):
                if value is stand_in:
                    namespace[key] = real
    return real


def is_loaded(module: object) -> bool:
    """Tell whether ``module`` is a real module (not a stand-in still waiting)."""
    return not isinstance(module, _LazyModule)


def _loaded(name: str) -> types.ModuleType | None:
    module = sys.modules.get(name)
    return module if isinstance(module, types.ModuleType) else None
