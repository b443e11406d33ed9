"""Environment plugins by name. A new domain adds its module to ENVIRONMENTS, a config in conf/ and
a prompt file; nothing in the driver changes.

An environment class has the three methods of `envs.base.Environment` and a `Settings`
dataclass: the schema of `env.settings` in the run config.
"""
from __future__ import annotations

import importlib

from omegaconf import OmegaConf

from envisions_ray.config import EnvConfig, env_settings
from envisions_ray.errors import UserError

# Imported on first use: a domain's heavy dependencies load only in runs of that domain.
ENVIRONMENTS = {
    "math": "envs.math_sandbox:MathSandbox",
    "logic": "envs.logic_engine:LogicEngine",
    "web": "envs.web_miniwob:WebEnvironment",
}


def environment_class(name: str) -> type:
    if name not in ENVIRONMENTS:
        raise UserError(f"env.name: unknown environment '{name}' (available: {', '.join(ENVIRONMENTS)})")
    module, attribute = ENVIRONMENTS[name].split(":")
    return getattr(importlib.import_module(module), attribute)


def make_env(cfg: EnvConfig):
    settings = env_settings(cfg.name, cfg.settings)  # checked again: an EnvConfig may be built in code
    return environment_class(cfg.name)(OmegaConf.to_object(settings))
