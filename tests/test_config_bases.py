"""The run configs in conf/ and their domain bases in conf/base/.

tests/fixtures/run_configs.json holds what each run config's files said before the bases were drawn out
of them (issue 36): each config must still resolve to what that said. A config changed on purpose
has its entry rewritten with it (conf/logic_proofwriter.yaml, re-sized to a 2-hour CPU recipe). It was written from the
files, not from the resolved dataclasses, so that a changed default in envisions_ray/config.py does
not make it stale; both sides are resolved here by the code of the day.
"""

import json
from pathlib import Path

import pytest
import yaml

from envisions_ray.config import load_config
from envisions_ray.errors import UserError

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
BASES = CONF / "base"
BEFORE = json.loads((Path(__file__).parent / "fixtures" / "run_configs.json").read_text())


def extends_chain(path: Path) -> list[Path]:
    """The file, then the file it extends, and so on."""
    base = yaml.safe_load(path.read_text()).get("extends")
    return [path, *(extends_chain((path.parent / base).resolve()) if base else [])]


def test_the_fixture_names_every_run_config():
    assert sorted(BEFORE) == sorted(str(path.relative_to(REPO)) for path in CONF.glob("*.yaml"))


@pytest.mark.parametrize("config", sorted(BEFORE))
def test_every_run_config_resolves_as_before_the_bases(config, tmp_path):
    before = tmp_path / "before.yaml"
    before.write_text(yaml.safe_dump(BEFORE[config]))
    assert load_config(REPO / config) == load_config(before)


def test_each_domain_has_one_base_that_its_every_run_config_extends():
    domains = {path: load_config(path).env.name for path in CONF.glob("*.yaml")}
    assert sorted(path.stem for path in BASES.glob("*.yaml")) == sorted(set(domains.values()))
    for path, domain in domains.items():
        assert extends_chain(path)[-1] == BASES / f"{domain}.yaml", path.name
    for base in BASES.glob("*.yaml"):
        assert yaml.safe_load(base.read_text())["env"]["name"] == base.stem


def test_a_base_is_refused_as_a_run():
    for base in BASES.glob("*.yaml"):
        with pytest.raises(UserError, match="'run_dir' is required"):
            load_config(base)
