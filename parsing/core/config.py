"""Typed run configurations: dataclasses read from YAML, with command-line values on top.

A trainer's settings are one dataclass deriving from :class:`Config`; its ``validate()``
checks the values (after :func:`coerce_fields` has turned YAML strings such as ``5e-4`` into
numbers) and raises :class:`InputError` naming the first bad field. :func:`load_config`
builds one from a YAML file and overrides, as ``--config FILE`` plus flags do in the CLIs.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any, TypeVar

import yaml

from parsing.core.errors import InputError

__all__ = ["Config", "coerce_fields", "load_config", "to_plain"]

log = logging.getLogger(__name__)

C = TypeVar("C", bound="Config")


class Config:
    """Base of the run-configuration dataclasses: validated on creation, YAML-safe dict."""

    def __post_init__(self) -> None:
        coerce_fields(self)
        self.validate()

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first bad field (nothing to check here)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-safe values (tuples become lists)."""
        return to_plain(dataclasses.asdict(self))  # type: ignore[call-overload]


def to_plain(value: Any) -> Any:
    """Nested dicts, lists and tuples as dicts and lists."""
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def coerce_fields(obj: Any) -> None:
    """Turn the values of ``int`` / ``float`` fields (also ``X | None``) into numbers (YAML 1.1
    reads ``5e-4`` as a string) and check ``bool`` fields; InputError names a bad field."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        kind = str(f.type).removesuffix(" | None")
        if value is None and kind != f.type:
            continue
        if kind in ("float", "int") and not isinstance(value, bool):
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise InputError(f"{f.name}: expected a number, got {value!r}") from None
            if kind == "int" and not number.is_integer():
                raise InputError(f"{f.name}: expected an integer, got {value!r}")
            setattr(obj, f.name, int(number) if kind == "int" else number)
        elif kind == "bool" and not isinstance(value, bool):
            raise InputError(f"{f.name}: expected true or false, got {value!r}")


def load_config(cls: type[C], path: str | os.PathLike | None = None,
                ignored: Collection[str] = (), ignored_as: str = "field",
                **overrides: Any) -> C:
    """A ``cls`` from a YAML file of its field names with ``overrides`` on top.

    ``None`` overrides are ignored, so unset command-line flags keep the file's values; a
    dict override is merged into the file's dict. Keys in ``ignored`` are dropped with a
    warning (``ignoring <ignored_as> 'key'``); any other unknown key is an InputError.
    """
    values: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            raise InputError(f"{path}: no such config file") from None
        except yaml.YAMLError as exc:
            raise InputError(f"{path}: not valid YAML ({exc})") from None
        if not isinstance(loaded, dict):
            raise InputError(f"{path}: expected a mapping of config fields")
        values.update(loaded)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in sorted(set(values) - known):
        if key in ignored:
            log.warning("%s: ignoring %s %r (not used here)", path, ignored_as, key)
            values.pop(key)
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(f"{path}: unknown config field(s) {', '.join(unknown)}")
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in known:
            raise InputError(f"unknown config field {key!r}")
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            value = {**values[key], **value}
        values[key] = value
    try:
        return cls(**values)
    except TypeError as exc:
        raise InputError(f"{path or 'config'}: {exc}") from None
