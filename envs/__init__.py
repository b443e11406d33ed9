"""Environment plugins by name. A new domain adds its module here and a config in conf/."""
from __future__ import annotations

from envisions_ray.config import EnvConfig
from envisions_ray.errors import UserError


def make_env(cfg: EnvConfig):
    if cfg.name == "math":
        from envs.math_sandbox import MathSandbox

        return MathSandbox(cfg.sandbox)
    raise UserError(f"env.name: unknown environment '{cfg.name}' (available: math)")
