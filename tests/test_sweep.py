"""`envisions sweep`: which runs a grid or a sweep file names, checked before anything runs."""

import pytest

from envisions_ray.cli import main
from envisions_ray.errors import UserError
from envisions_ray.sweep import plan_sweep


def test_comma_lists_make_every_combination(tmp_path):
    parent, runs = plan_sweep(
        "conf/math_quickstart.yaml", ["method=envisions,star_env", "algorithm.k=2,3", "seed=5"], str(tmp_path)
    )
    assert parent == tmp_path
    assert [r.name for r in runs] == [
        "method-envisions_k-2",
        "method-envisions_k-3",
        "method-star_env_k-2",
        "method-star_env_k-3",
    ]
    assert [(r.cfg.method, r.cfg.algorithm.k, r.cfg.seed) for r in runs][-1] == ("star_env", 3, 5)
    assert runs[0].cfg.run_dir == str(tmp_path / "method-envisions_k-2")
    # A bracketed value is one value, commas and all.
    _, (only,) = plan_sweep("conf/math_quickstart.yaml", ['generator.stop=["a","b"]'], str(tmp_path))
    assert only.cfg.generator.stop == ["a", "b"]


def test_the_table3_sweep_file_names_the_paper_ablations():
    parent, runs = plan_sweep("conf/sweeps/table3_quickstart.yaml", [], None)
    assert str(parent) == "runs/table3_quickstart"
    by_name = {r.name: r.cfg for r in runs}
    assert set(by_name) == {
        "envisions",
        "without_self_refine",
        "without_self_rewards",
        "without_long_term_memory",
        "without_l2",
    }
    assert by_name["without_self_refine"].algorithm.refine is False
    assert by_name["without_self_rewards"].algorithm.rank == "random"
    assert by_name["without_long_term_memory"].algorithm.memory == "current_iteration"
    assert by_name["without_l2"].algorithm.l2 is False
    assert all(cfg.eval.refine and cfg.model.path == "smollm2" for cfg in by_name.values())


def test_one_bad_run_stops_the_sweep_before_it_starts(tmp_path, capsys):
    assert main(["sweep", "conf/math_quickstart.yaml", "method=envisions,ppo", "--parent", str(tmp_path / "s")]) == 2
    assert "'method' must be one of" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text("sweep:\n  config: conf/math_quickstart.yaml\n")
    with pytest.raises(UserError, match="needs sweep.config"):
        plan_sweep(str(bad), [], None)


def test_dry_run_lists_the_runs(tmp_path, capsys):
    assert (
        main(
            [
                "sweep",
                "conf/math_quickstart.yaml",
                "method=envisions,star_env,few_shot",
                "--parent",
                str(tmp_path),
                "--dry-run",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert f"3 runs under {tmp_path}" in out and "method-few_shot: method few_shot" in out
