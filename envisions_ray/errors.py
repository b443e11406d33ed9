"""The one exception type that means "the user gave us something wrong".

The CLI turns it into a single line on stderr and exit code 2; anything else is a bug and keeps
its traceback. `explain` turns OmegaConf's errors about a config into such a line.
"""

from __future__ import annotations

import difflib

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError


class UserError(Exception):
    """Bad config, data, model path or run directory: reported in one line, exit code 2."""


def _all_keys(node: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in node.items():
        keys.append(f"{prefix}{key}")
        if isinstance(value, dict):
            keys.extend(_all_keys(value, f"{prefix}{key}."))
    return keys


def unknown_key_error(key: str, schema, prefix: str = "") -> UserError:
    candidates = [prefix + name for name in _all_keys(OmegaConf.to_container(schema))]
    nearest = difflib.get_close_matches(prefix + key, candidates, n=1, cutoff=0.0)
    hint = f"; did you mean '{nearest[0]}'?" if nearest else ""
    return UserError(f"config: unknown key '{prefix}{key}'{hint}")


def explain(err: OmegaConfBaseException, schema, prefix: str = "") -> UserError:
    key = err.full_key or getattr(err, "key", "") or "?"
    if isinstance(err, ConfigKeyError):
        return unknown_key_error(str(key), schema, prefix)
    key = f"{prefix}{key}"
    if isinstance(err, ValidationError):
        return UserError(f"config: '{key}' has the wrong type: {err.msg.splitlines()[0]}")
    return UserError(f"config: '{key}': {err.msg.splitlines()[0]}")
