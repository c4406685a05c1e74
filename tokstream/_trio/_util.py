"""Small helpers the trio shell shares."""

from __future__ import annotations

from abc import ABCMeta
from typing import Any, TypeVar

__all__ = ["NoPublicConstructor"]

_T = TypeVar("_T")


class NoPublicConstructor(ABCMeta):
    """A metaclass for classes that only a factory should build (as trio's ``_util``).

    ``Cls(...)`` raises ``TypeError``; the factory builds instances with
    ``Cls._create(...)``. It derives from ``ABCMeta`` so that it combines with
    ``trio.abc`` base classes.
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"{cls.__module__.split('.')[0]}.{cls.__qualname__} has no public constructor; "
            "get one from the function that returns it"
        )

    def _create(cls: type[_T], *args: Any, **kwargs: Any) -> _T:
        return super().__call__(*args, **kwargs)  # type: ignore[misc, no-any-return]
