"""Named extension points (timm's convention): ``register`` a constructor, ``create`` by name,
``names`` matching a pattern. Backbones, parser models, augmentations, fill modes, explainers
and dataset kinds each keep one :class:`Registry` and expose ``register_x`` / ``create_x`` /
``list_x`` over it.
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar, overload

from parsing.core.errors import InputError

__all__ = ["Registry", "import_plugins"]

T = TypeVar("T")


def import_plugins(modules: Iterable[str]) -> None:
    """Import each module of ``--import`` (one that registers a custom backbone, augmentation,
    ...) so that its entries can be created by name."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise InputError(f"--import {module}: cannot import it ({exc})") from None


class Registry(Generic[T]):
    """Entries of one kind by name.

    Args:
        kind: what an entry is, for messages (``"backbone"``, ``"augmentation"``).
        extra: shown after the registered names when a name is unknown (e.g. the
            ``"timm:<model name>"`` form a factory accepts besides its entries).
    """

    def __init__(self, kind: str, extra: str | None = None) -> None:
        self.kind, self.extra = kind, extra
        self._entries: dict[str, T] = {}

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: T) -> T: ...

    def register(self, name: Any) -> Any:
        """Decorator: ``@reg.register("name")``, or bare ``@reg.register`` to use the entry's
        ``__name__``. Registering a taken name is a ``ValueError`` (a programming error)."""
        if not isinstance(name, str):
            return self._add(name.__name__, name)
        return lambda entry: self._add(name, entry)

    def _add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted registered names matching a shell-style ``pattern``."""
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def known(self) -> str:
        """The registered names (and ``extra``) as one comma-separated string."""
        return ", ".join(self.names() + ([self.extra] if self.extra else []))

    def get(self, name: str) -> T:
        """The entry registered as ``name``; an :class:`InputError` listing the names if none."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise InputError(f"unknown {self.kind} {name!r}; known: {self.known()}") from None

    def create(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call the entry registered as ``name`` with the given arguments."""
        return self.get(name)(*args, **kwargs)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        """The names in registration order."""
        return iter(list(self._entries))

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"
