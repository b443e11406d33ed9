"""Generated input, property-based (issue 33 part 5): config overrides, dataset files and sweep files
either load or are refused with a UserError, never another exception. Each property tries
MAX_EXAMPLES inputs; `pytest tests/test_fuzz_input.py --hypothesis-show-statistics` says how many ran."""

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from envisions_ray.config import RunConfig, load_config
from envisions_ray.data import load_examples
from envisions_ray.errors import UserError
from envisions_ray.sweep import plan_sweep
from envisions_ray.types import Example
from tests.test_cli import QUICKSTART

MAX_EXAMPLES = 200
RUN_CONFIG = str(Path(QUICKSTART).resolve())  # from the scratch directory too
BOUNDED = settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def settings_of(node: dict, prefix=""):
    """(dotted key, default) of every setting of the run config, sections included."""
    for key, value in node.items():
        yield f"{prefix}{key}", value
        if isinstance(value, dict):
            yield from settings_of(value, f"{prefix}{key}.")


DEFAULTS = dict(settings_of(OmegaConf.to_container(OmegaConf.structured(RunConfig))))
# What a value may look like to OmegaConf's YAML: its syntax, its interpolations, numbers at the edges.
TRICKY = [
    "", "null", "true", "nan", ".inf", "-.inf", "1e999", "-0", "9" * 5000, "0x1f", "2024-13-45", "[]", "{}",
    "[1, [2]]", "{a: {b: 1}}", "${nope}", "${oc.env:ENVISIONS_UNSET}", "${train.lr}", "${method}", "${", "}", "'",
    '"', "[", "{", ": ", "#", "- a", "!!python/object:os.system", "&a [*a]", "*a", "\0", "caf\u00e9", "\ud7ff",
]  # fmt: skip
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
values = st.one_of(
    st.sampled_from(TRICKY),
    st.text(max_size=20),
    st.floats().map(repr),
    st.integers().map(str),
    json_values.map(json.dumps),
)


def typed_values(default) -> st.SearchStrategy[str]:
    """Values of a setting's own type, the default among them, as an override writes them."""
    if isinstance(default, bool):
        return st.sampled_from(["true", "false"])
    if isinstance(default, int):
        return st.just(str(default)) | st.integers(-2, 2**33).map(str)
    if isinstance(default, float):
        return st.just(repr(default)) | st.floats().map(repr)
    return st.just(str(default)) | st.text(max_size=8)


# Settings of their own type, which load more often than not; then anything, which rarely does.
typed_overrides = st.sampled_from(sorted(DEFAULTS.items())).flatmap(
    lambda setting: typed_values(setting[1]).map(f"{setting[0]}={{}}".format)
)
any_overrides = st.one_of(
    st.builds("{}={}".format, st.sampled_from(sorted(DEFAULTS)) | st.text(max_size=12), values),
    st.builds(
        "{}.{}={}".format, st.sampled_from(["data.eval", "env.settings", "env.resources"]), st.text(max_size=8), values
    ),
    st.text(max_size=20),
)
overrides = st.builds(list.__add__, st.lists(typed_overrides, max_size=3), st.lists(any_overrides, max_size=1))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@BOUNDED
@given(overrides=overrides, from_file=st.booleans())
def test_load_config_loads_or_refuses_in_one_line(overrides, from_file):
    try:
        cfg = load_config(QUICKSTART if from_file else None, overrides if from_file else ["run_dir=r", *overrides])
    except UserError as err:
        assert len(str(err).splitlines()) == 1
        event("refused")
    else:
        event("loaded")
        assert isinstance(cfg, RunConfig)


# Mostly well-formed records, so that files load as often as they are refused; then anything.
answers = st.one_of(st.integers(), st.floats(), st.text(max_size=8), st.sampled_from(["nan", "-inf", "#### 1,072"]))
plain_records = st.fixed_dictionaries(
    {"question": st.text(max_size=20), "answer": answers},
    optional={"id": st.text(max_size=6) | st.integers(), "context": json_values},
)
labels = st.sampled_from([True, False, "Unknown", "unknown", "maybe", None])
ruletaker_questions = st.fixed_dictionaries(
    {"question": st.text(max_size=20), "answer": labels}, optional={"QDep": json_values}
)
ruletaker_records = st.fixed_dictionaries(
    {
        "theory": st.text(max_size=20),
        "questions": st.lists(ruletaker_questions, max_size=3)
        | st.dictionaries(st.text(max_size=3), ruletaker_questions, max_size=3),
    },
    optional={"id": st.text(max_size=6) | st.integers()},
)
# A file of one format's records, now and then with a damaged line (anything at all) among them.
damaged = st.one_of(
    st.dictionaries(st.text(max_size=8), json_values).map(json.dumps).map(str.encode), st.binary(max_size=30)
)
files = st.sampled_from([("", plain_records), ("ruletaker:", ruletaker_records)]).flatmap(
    lambda format: st.tuples(
        st.just(format[0]),
        st.lists(format[1].map(json.dumps).map(str.encode) | st.just(b""), max_size=5),
        st.lists(damaged, max_size=1),
    )
)
slices = st.just("") | st.sampled_from(["[:-1]", "[1:]", "[a:b]", "[::]", "[-0:]", "[", "]", "[:]"])


@BOUNDED
@given(file=files, part=slices, size=st.none() | st.integers(0, 5))
def test_a_dataset_file_loads_or_is_refused_in_one_line(scratch, file, part, size):
    kind, lines, damage = file
    path = scratch / "data.jsonl"
    path.write_bytes(b"\n".join([*lines, *damage]))
    try:
        examples = load_examples(f"{kind}{path}{part}", size)
    except UserError as err:
        assert len(str(err).splitlines()) == 1
        event("refused")
    else:
        event("loaded")
        assert all(isinstance(x, Example) for x in examples)


# Sweeps that plan (runs named as directories, overrides that load), then anything at all.
names = st.from_regex(r"[a-z_]{1,8}", fullmatch=True)
good_lists = st.lists(st.sampled_from(["method=star_env", "algorithm.k=2", "eval.refine=true"]), max_size=2)
good_sweeps = st.fixed_dictionaries(
    {"config": st.just(RUN_CONFIG), "runs": st.dictionaries(names, good_lists, min_size=1, max_size=3)},
    optional={"parent": names, "overrides": good_lists},
)
any_lists = st.lists(st.sampled_from(["method=star_env", "train.lr=nan"]) | values, max_size=2)
any_sweeps = st.fixed_dictionaries(
    {
        "config": st.just(RUN_CONFIG) | st.sampled_from(["absent.yaml", ""]) | json_values,
        "runs": st.dictionaries(names | st.text(max_size=8) | st.integers(), any_lists | json_values, max_size=3)
        | json_values,
    },
    optional={"parent": st.text(max_size=8) | json_values, "overrides": any_lists | json_values},
)
sweep_texts = st.one_of(
    (good_sweeps | any_sweeps).map(lambda sweep: yaml.safe_dump({"sweep": sweep}, allow_unicode=True)),
    st.just(f"extends: {RUN_CONFIG}\n"),  # a run config: its overrides' comma lists are the grid
    st.text(max_size=40),
)
grids = st.just([]) | st.lists(st.sampled_from(["2", "2,3", "1,x"]) | values, max_size=2)


@BOUNDED
@given(text=sweep_texts, garbage=st.just(b"") | st.binary(max_size=4), grid=grids, parent=st.booleans())
def test_a_sweep_file_plans_or_is_refused_in_one_line(scratch, text, garbage, grid, parent):
    path = scratch / "sweep.yaml"
    path.write_bytes(text.encode() + garbage)
    try:
        parent_dir, runs = plan_sweep(
            str(path), [f"algorithm.k={v}" for v in grid], str(scratch / "p") if parent else None
        )
    except UserError as err:
        assert len(str(err).splitlines()) == 1
        event("refused")
    else:
        event("loaded")
        assert all(Path(run.cfg.run_dir).resolve().parent == parent_dir.resolve() for run in runs)
