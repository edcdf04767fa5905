"""Every recipe runs at its smoke budget and writes results.json as DESIGN.md specifies."""

import json

import pytest

from seqlab.recipes import RECIPES
from seqlab.recipes.base import Claim

REQUIRED = {"recipe", "budget", "seed", "device", "seqlab_version", "wall_seconds", "metrics", "claims", "artifacts", "runs"}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_smoke(cli, tmp_path, name):
    out = tmp_path / name
    code, _, err = cli("reproduce", name, "--budget", "smoke", "--out", out, "--quiet")
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert REQUIRED <= set(results)
    assert results["recipe"] == name and results["budget"] == "smoke" and results["claims"] == []
    for artifact in results["artifacts"]:
        assert (out / artifact).is_file(), artifact
    for label, run in results["runs"].items():
        assert (out / run / "config.json").is_file(), label
        # A recipe's runs are ordinary run directories: `seqlab eval` works on them.
        kind = json.loads((out / run / "config.json").read_text()).get("kind")
        lengths = [] if kind == "token" else ["--lengths", "2"]  # a token-task run is scored as a whole
        code, stdout, err = cli("eval", out / run, *lengths, "--n", "3", "--json")
        assert code == 0, err
    report = (out / "report.md").read_text()
    assert report.startswith("# ")
    (out / "report.md").unlink()
    code, _, err = cli("report", out)  # rebuilt from results.json alone
    assert code == 0, err
    assert (out / "report.md").read_text() == report


def test_claims_are_computed_from_measurements():
    at_least = Claim("x", "paper", metric="m", threshold=0.9)
    assert at_least.judge({"m": 0.95})["holds"] is True
    assert at_least.judge({"m": 0.85})["holds"] is False
    assert at_least.judge({})["holds"] is False  # nothing measured: the claim does not hold
    at_most = Claim("t", "target", metric="s", threshold=300, direction="at_most")
    assert at_most.judge({"s": 120})["holds"] is True and at_most.judge({"s": 301})["holds"] is False


def test_longest_length_at_level():
    from seqlab.recipes.markdown import longest_at

    assert longest_at({1: 1.0, 2: 0.99, 3: 0.5, 4: 1.0}, 0.95) == 2
    assert longest_at({1: 0.2, 2: 1.0}, 0.95) == 0


def test_a_claim_about_one_option_is_judged_only_under_it():
    import argparse

    claim = Claim("x", "y", metric="m", threshold=1.0, when=(("task", "copy"),))
    assert claim.applies("cpu", argparse.Namespace(task="copy"))
    assert not claim.applies("cpu", argparse.Namespace(task="maze"))
    assert not claim.applies("smoke", argparse.Namespace(task="copy"))


def test_a_claim_about_one_of_a_list_option_is_judged_only_when_it_is_chosen():
    import argparse

    claim = Claim("x", "y", metric="m", threshold=1.0, includes=(("tasks", "sparse-parity"),))
    assert claim.applies("cpu", argparse.Namespace(tasks=("linear-regression", "sparse-parity")))
    assert not claim.applies("cpu", argparse.Namespace(tasks=("linear-regression",)))


def test_mambaformer_runs_the_tasks_it_is_given(cli, tmp_path):
    out = tmp_path / "mf"
    code, _, err = cli("reproduce", "mambaformer", "--budget", "smoke", "--out", out, "--quiet", "--tasks", "decision-tree")
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert sorted(results["runs"]) == ["decision-tree-mamba", "decision-tree-mambaformer", "decision-tree-transformer"]
    code, _, err = cli("reproduce", "mambaformer", "--budget", "smoke", "--out", tmp_path / "x", "--tasks", "parity")
    assert code == 2 and "--tasks takes a comma list" in err and "Traceback" not in err


def test_an_unknown_recipe_names_the_nearest_or_lists_them_all():
    from seqlab.core.errors import BadInput
    from seqlab.recipes import get_recipe

    with pytest.raises(BadInput) as e:
        get_recipe("additoin")
    assert str(e.value) == "unknown recipe 'additoin' (did you mean 'addition'?)"
    with pytest.raises(BadInput) as e:
        get_recipe("zzz")
    assert str(e.value) == f"unknown recipe 'zzz' (known: {', '.join(sorted(RECIPES))})"


def _one_line_error(code, out, err) -> str:
    assert code == 2, (out, err)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
    return lines[0]


def _files(d):
    return sorted((str(p.relative_to(d)), p.read_bytes()) for p in d.rglob("*") if p.is_file())


@pytest.mark.parametrize("make, says", [
    ("run", "is a run directory"),
    ("foreign", "is not a recipe's folder"),
    ("other-recipe", "holds recipe 'entp', not recipe 'addition'"),
    ("sweep", "is a sweep directory"),
    ("file", "is not a directory"),
])
def test_reproduce_refuses_a_folder_it_does_not_own(cli, tmp_path, make, says):
    out = tmp_path / "out"
    if make == "file":
        out.write_text("mine")
    else:
        out.mkdir()
        (out / "plots").mkdir()
        (out / "plots" / "accuracy_by_length.png").write_bytes(b"my plot")
        name = {"run": "config.json", "foreign": "notes.txt", "other-recipe": "results.json", "sweep": "sweep.json"}[make]
        (out / name).write_text(json.dumps({"recipe": "entp", "budget": "smoke", "seed": 0}))
    before = _files(tmp_path)
    line = _one_line_error(*cli("reproduce", "addition", "--budget", "smoke", "--out", out, "--quiet"))
    assert says in line
    assert _files(tmp_path) == before  # nothing written, not even a lock file


@pytest.mark.slow
def test_reproduce_resumes_its_own_folder(cli, tmp_path):
    """A folder of the same recipe is resumed, whether it has results.json yet (a finished run) or only its
    recipe.json (one killed before the end); one holding seqlab's lock file alone is new."""
    out = tmp_path / "out"
    out.mkdir()
    (out / ".seqlab.lock").write_text("1\n")
    args = ("reproduce", "addition", "--budget", "smoke", "--out", out, "--quiet")
    assert cli(*args)[0] == 0
    assert json.loads((out / "recipe.json").read_text())["recipe"] == "addition"
    (out / "results.json").unlink()
    code, _, err = cli(*args)
    assert code == 0, err
    assert json.loads((out / "results.json").read_text())["recipe"] == "addition"


def test_scale_multiplies_every_steps_entry_and_is_refused_out_of_range():
    from seqlab.core.errors import BadInput
    from seqlab.recipes import get_recipe
    from seqlab.recipes.base import parse_options, scaled_steps
    settings = {"train": {"steps": 300, "lr": 1e-3}, "lsa": {"steps": 3, "depths": [1, 2]}, "steps_note": 5}
    assert scaled_steps(settings, 2) == {"train": {"steps": 600, "lr": 1e-3}, "lsa": {"steps": 6, "depths": [1, 2]},
                                         "steps_note": 5}
    assert scaled_steps({"steps": 3}, 0.1) == {"steps": 1}
    recipe = get_recipe("addition")
    assert parse_options(recipe, ["--scale", "4"]).scale == 4.0
    assert not hasattr(parse_options(recipe, []), "scale")  # absent unless given: results.json's options unchanged
    for bad in ("0", "-1", "x", "1000"):
        with pytest.raises(BadInput, match="scale"):
            parse_options(recipe, ["--scale", bad])


def test_the_reproduce_command_leaves_unset_options_out():
    from seqlab.recipes.markdown import reproduce_command

    results = {"recipe": "self-improve", "budget": "cpu", "seed": 0, "options": {"task": "reverse", "rounds": None}}
    assert reproduce_command(results) == "seqlab reproduce self-improve --task reverse --budget cpu --seed 0"
