"""A run's ``config`` and ``summary``: dicts with attribute access, as W&B's
``run.config`` (``run.config.lr``, ``run.config["lr"]``, ``update``) and
``run.summary``.

Invariant: what a :class:`RunValues` holds is always storable (each value set is
converted as W&B converts it, numpy scalars and arrays to numbers and lists, then
checked by :func:`objstore.storage.objects.storable_dict`: both in
:func:`objstore.api.artifact.check_metadata`, as it is set), so a
bad value is refused at the line that sets it, never later when the run record
is written; ``on_change`` is told of every change so the run can record it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from objstore.api.artifact import check_metadata
from objstore.errors import InvalidInput, UsageError


class RunValues:
    """A run's config or summary: a string-keyed dict, read and set by key or attribute."""

    def __init__(self, what: str, values: Mapping[str, Any] | None = None,
                 on_change: Callable[[], None] | None = None) -> None:
        object.__setattr__(self, "_what", what)
        object.__setattr__(self, "_values", check_metadata(dict(values or {}), what))
        object.__setattr__(self, "_on_change", on_change)

    def as_dict(self) -> dict[str, Any]:
        """A copy of the values, as stored."""
        return dict(self._values)

    def update(self, values: Mapping[str, Any] | None = None, allow_val_change: bool | None = None, **more: Any) -> None:
        """Set many values at once (W&B's ``allow_val_change`` is accepted: values may always change here)."""
        # As W&B's: np.argmax's np.int64, a float16 model's np.float32 loss are numbers (storable_dict alone refused them).
        new = check_metadata({**(values or {}), **more}, self._what)
        if new:
            self._values.update(new)
            self._changed()

    def setdefaults(self, values: Mapping[str, Any]) -> None:
        """Set the values not set yet (W&B's ``config.setdefaults``)."""
        self.update({k: v for k, v in values.items() if k not in self._values})

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    def keys(self) -> Any:
        return self._values.keys()

    def items(self) -> Any:
        return self._values.items()

    def values(self) -> Any:
        return self._values.values()

    def get(self, key: str, default: Any = None) -> Any:
        return self._values.get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def __delitem__(self, key: str) -> None:
        del self._values[key]
        self._changed()

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(f"{self._what} has no key {key!r}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def __delattr__(self, key: str) -> None:
        try:
            self.__delitem__(key)
        except KeyError:
            raise AttributeError(f"{self._what} has no key {key!r}") from None

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RunValues):
            return bool(self._values == other._values)
        return isinstance(other, Mapping) and bool(self._values == dict(other))

    __hash__ = None  # type: ignore[assignment]  # mutable, as a dict

    def __repr__(self) -> str:
        return repr(self._values)


def config_values(config: object, include: list[str] | None = None, exclude: list[str] | None = None) -> dict[str, Any]:
    """``init(config=…)`` as a dict, by W&B's rules: a dict (or a run's config), a
    path to a YAML file (needs PyYAML) or JSON file, or an object with attributes
    (an ``argparse.Namespace``); then filtered by ``include`` / ``exclude``."""
    if include and exclude:
        raise UsageError("pass config_include_keys or config_exclude_keys, not both")
    if config is None:
        values: dict[str, Any] = {}
    elif isinstance(config, RunValues):
        values = config.as_dict()
    elif isinstance(config, Mapping):
        values = dict(config)
    elif isinstance(config, str | os.PathLike):
        values = _config_file(os.fspath(config))
    elif hasattr(config, "__dict__"):
        values = dict(vars(config))
    else:
        raise InvalidInput(f"config must be a dict, a YAML or JSON file's path, or an object with attributes, "
                           f"not {type(config).__name__}")
    if include:
        values = {k: v for k, v in values.items() if k in include}
    if exclude:
        values = {k: v for k, v in values.items() if k not in exclude}
    return values


def _config_file(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise UsageError(f"config file {path} cannot be read ({exc.strerror or exc}); check the path") from None
    try:
        if path.endswith(".json"):
            loaded = json.loads(text)
        else:
            try:
                import yaml  # type: ignore[import-untyped]  # optional: W&B's config files are YAML
            except ImportError:
                raise UsageError(f"config file {path} is YAML: install PyYAML to read it, or give a .json file") from None
            try:
                loaded = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise UsageError(f"config file {path} cannot be parsed: {exc}") from None
    except ValueError as exc:
        raise UsageError(f"config file {path} cannot be parsed: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise UsageError(f"config file {path} must hold a mapping of names to values")
    loaded.pop("wandb_version", None)
    # W&B's config files may give each value as {"value": …, "desc": …}
    return {k: v["value"] if isinstance(v, dict) and "value" in v else v for k, v in loaded.items()}
