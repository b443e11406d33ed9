"""The one exception type that means "the user gave us something wrong".

The CLI turns it into a single line on stderr and exit code 2; anything else is a bug and keeps
its traceback. `explain` turns OmegaConf's errors about a config into such a line.
"""

from __future__ import annotations

import difflib
import re

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

# What str.splitlines breaks a line at.
LINE_BREAKS = re.compile("[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")


class UserError(Exception):
    """Bad config, data, model path or run directory: reported in one line, exit code 2. A line
    break in what the user gave (a key, a value, a file name) is written as its escape, \\n."""

    def __init__(self, message: str) -> None:
        super().__init__(LINE_BREAKS.sub(lambda found: repr(found.group())[1:-1], message))


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
    key = err.full_key or getattr(err, "key", "")
    if isinstance(err, ConfigKeyError):
        return unknown_key_error(str(key or "?"), schema, prefix)
    # Some errors carry no msg (a scalar merged onto a section: "Merge error: int is not a subclass of ...").
    message = (str(err.msg or err) or type(err).__name__).splitlines()[0]
    if not key:
        return UserError(f"config: {message}")
    wrong_type = " has the wrong type" if isinstance(err, ValidationError) else ""
    return UserError(f"config: '{prefix}{key}'{wrong_type}: {message}")
