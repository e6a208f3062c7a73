"""Settings: the entity, project, store, run id and remotes a call uses when it names none.

One resolution order for every setting, used by the library (``objstore.init``,
``Api``, ``Store.open``, remotes) and the command line alike, first found wins:

1. the explicit argument (``init(project=…)``, ``--project``, ``--store``);
2. the environment: ``OBJSTORE_ENTITY`` then W&B's ``WANDB_ENTITY``,
   ``OBJSTORE_PROJECT`` then ``WANDB_PROJECT``, ``OBJSTORE_DIR`` (the store),
   ``OBJSTORE_RUN_ID`` then ``WANDB_RUN_ID`` (the run ``init`` and the CLI's
   run commands join: W&B's rule, an id in use resumes that run);
3. the user config file (not for the run id: an id in a file would make every
   process on the machine one run), TOML, at ``$OBJSTORE_CONFIG``, else ``config.toml`` in
   the platform's config directory (platformdirs: ``~/.config/objstore`` on Linux);
4. the default: the OS user name, ``uncategorized``; for the store, the nearest
   ``.objstore`` directory above the working directory, else ``~/.objstore``.

The store alone has one step more: a ``.objstore`` directory found above the
working directory comes before the config file's ``store`` (as git finds the
repository you stand in), so the file names the store used outside any project.
Remotes a store records (``objstore remote add``) come before the config file's
``[remotes.NAME]`` tables, which every store on the machine can use.

Invariant: the file is read only when a setting is not given by an argument or
the environment, and a bad file (not TOML, an unknown key, a value of the wrong
type) is refused with its path, never half applied.
"""

from __future__ import annotations

import getpass
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from objstore.errors import InvalidInput, did_you_mean

DEFAULT_PROJECT = "uncategorized"

CONFIG_ENV = "OBJSTORE_CONFIG"
CONFIG_NAME = "config.toml"

# Each setting's environment variables, first found wins: objstore's own, then W&B's,
# so a W&B script's environment carries over to the drop-in.
ENV_VARS: dict[str, tuple[str, ...]] = {
    "entity": ("OBJSTORE_ENTITY", "WANDB_ENTITY"),
    "project": ("OBJSTORE_PROJECT", "WANDB_PROJECT"),
    "store": ("OBJSTORE_DIR",),
    "run_id": ("OBJSTORE_RUN_ID", "WANDB_RUN_ID"),
}
# The settings the config file may hold.
CONFIG_KEYS = ("entity", "project", "store")
# What a [remotes.NAME] table may hold (secrets never: they stay in the environment).
REMOTE_KEYS = ("url", "endpoint", "region", "allow_http")


def default_entity() -> str:
    """The OS user name, made a valid entity name."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "user"
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", user).lstrip(".")[:128]
    return cleaned or "user"


@dataclass(frozen=True)
class Setting:
    """A setting's value and where it came from (``source``: ``argument``,
    ``$NAME``, ``config file PATH`` or ``default``); ``value`` None means the
    caller's own default applies (the store's search upward)."""

    name: str
    value: str | None
    source: str


@dataclass(frozen=True)
class UserConfig:
    """The user config file's contents (empty when there is no file)."""

    path: Path
    values: dict[str, str] = field(default_factory=dict)
    remotes: dict[str, dict[str, str]] = field(default_factory=dict)


def config_path() -> Path:
    """``$OBJSTORE_CONFIG``, else ``config.toml`` in the platform's user config directory."""
    given = os.environ.get(CONFIG_ENV)
    if given:
        return Path(given).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir("objstore", appauthor=False)) / CONFIG_NAME


_read: dict[tuple[str, int, int], UserConfig] = {}


def user_config() -> UserConfig:
    """The user config file, parsed and checked (read again only when it changes)."""
    path = config_path()
    try:
        st = path.stat()
    except FileNotFoundError:
        return UserConfig(path)
    except OSError as exc:
        raise InvalidInput(f"config file {path} cannot be read ({exc.strerror or exc})") from None
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _read:
        _read.clear()
        _read[key] = _parse(path)
    return _read[key]


def _parse(path: Path) -> UserConfig:
    import tomllib

    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise InvalidInput(f"config file {path} cannot be read ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"config file {path} is not valid TOML: {exc}") from None
    values: dict[str, str] = {}
    remotes: dict[str, dict[str, str]] = {}
    for key, value in data.items():
        if key == "remotes":
            remotes = _remotes(path, value)
        elif key in CONFIG_KEYS:
            if not isinstance(value, str) or not value:
                raise InvalidInput(f"config file {path}: {key} must be a non-empty string, not {value!r}")
            values[key] = value
        else:
            raise InvalidInput(f"config file {path}: unknown setting {key!r} (settings: "
                               f"{', '.join([*CONFIG_KEYS, 'remotes'])}){did_you_mean(key, [*CONFIG_KEYS, 'remotes'])}")
    return UserConfig(path, values, remotes)


def _remotes(path: Path, tables: Any) -> dict[str, dict[str, str]]:
    if not isinstance(tables, dict):
        raise InvalidInput(f"config file {path}: remotes must be tables, e.g. [remotes.team] url = \"s3://…\"")
    out: dict[str, dict[str, str]] = {}
    for name, table in tables.items():
        if not isinstance(table, dict) or not isinstance(table.get("url"), str):
            raise InvalidInput(f"config file {path}: [remotes.{name}] needs url = \"…\"")
        for key, value in table.items():
            if key not in REMOTE_KEYS:
                raise InvalidInput(f"config file {path}: [remotes.{name}] has unknown key {key!r} (keys: "
                                   f"{', '.join(REMOTE_KEYS)}; credentials stay in the environment)"
                                   f"{did_you_mean(key, REMOTE_KEYS)}")
            if not isinstance(value, str | bool):
                raise InvalidInput(f"config file {path}: [remotes.{name}] {key} must be a string")
        out[str(name)] = {k: str(v).lower() if isinstance(v, bool) else v for k, v in table.items()}
    return out


def resolve(name: str, given: str | os.PathLike[str] | None = None) -> Setting:
    """Setting ``name`` (``entity``, ``project``, ``store`` or ``run_id``) by the order
    above; ``value`` is None when none is set and the default is the caller's (the
    store's search upward, a new run id)."""
    if name not in ENV_VARS:
        raise InvalidInput(f"no setting {name!r}{did_you_mean(name, ENV_VARS)}")
    if given is not None and str(given) != "":
        return Setting(name, os.fspath(given), "argument")
    for var in ENV_VARS[name]:
        if os.environ.get(var):
            return Setting(name, os.environ[var], f"${var}")
    config = user_config() if name in CONFIG_KEYS else UserConfig(config_path())
    if name in config.values:
        return Setting(name, config.values[name], f"config file {config.path}")
    default = default_entity() if name == "entity" else DEFAULT_PROJECT if name == "project" else None
    return Setting(name, default, "default")


def resolve_entity(given: str | None = None) -> str:
    """The entity: ``given``, ``$OBJSTORE_ENTITY``, ``$WANDB_ENTITY``, the config file, the OS user."""
    value = resolve("entity", given).value
    assert value is not None  # the default is always there
    return value


def resolve_project(given: str | None = None) -> str:
    """The project: ``given``, ``$OBJSTORE_PROJECT``, ``$WANDB_PROJECT``, the config file, ``uncategorized``."""
    value = resolve("project", given).value
    assert value is not None
    return value


def resolve_run_id(given: str | None = None) -> str | None:
    """The run to join: ``given``, ``$OBJSTORE_RUN_ID``, ``$WANDB_RUN_ID``, else None (a new run)."""
    return resolve("run_id", given).value


def config_remotes() -> dict[str, dict[str, str]]:
    """The config file's remotes: name -> {"url": …, and options}."""
    return user_config().remotes
