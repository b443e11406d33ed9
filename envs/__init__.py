"""Environment plugins by name. A new domain adds its module to ENVIRONMENTS, a config in conf/ and
a prompt file; nothing in the driver changes.

An environment class has the three methods of `envisions_ray.envs.base.Environment` and a `Settings`
dataclass: the schema of `env.settings` in the run config.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable, Protocol

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from envisions_ray.errors import UserError, explain
from envisions_ray.types import Example

# Imported on first use: a domain's heavy dependencies load only in runs of that domain.
ENVIRONMENTS = {
    "math": "envisions_ray.envs.math_sandbox:MathSandbox",
    "logic": "envisions_ray.envs.logic_engine:LogicEngine",
    "web": "envisions_ray.envs.web_miniwob:WebEnvironment",
}


def environment_class(name: str) -> type:
    if name not in ENVIRONMENTS:
        raise UserError(f"env.name: unknown environment '{name}' (available: {', '.join(ENVIRONMENTS)})")
    module, attribute = ENVIRONMENTS[name].split(":")
    return getattr(importlib.import_module(module), attribute)


def offline_describe(name: str) -> Callable[[Example], str] | None:
    """The env's `describe` where it needs no running environment (a staticmethod: math, logic), so a
    run can see its prompts before it starts; None where it does (web: the page, in a browser)."""
    describe = inspect.getattr_static(environment_class(name), "describe")
    return describe.__func__ if isinstance(describe, staticmethod) else None


def env_settings(env_name: str, given) -> DictConfig:
    """`env.settings` checked against the env's own schema, with its defaults filled in."""
    schema = OmegaConf.structured(environment_class(env_name).Settings)
    try:
        return OmegaConf.merge(schema, given)
    except OmegaConfBaseException as err:
        raise explain(err, schema, prefix="env.settings.") from None


class EnvChoice(Protocol):
    """Which environment, with which settings: the run config's `env` (an EnvConfig)."""

    name: str
    settings: dict[str, Any]


def make_env(cfg: EnvChoice):
    settings = env_settings(cfg.name, cfg.settings)  # checked again: an EnvConfig may be built in code
    return environment_class(cfg.name)(OmegaConf.to_object(settings))
