"""Self-improvement: the filters on hand-made cases, the mixture weights, the loop at smoke size,
the proof that no true answer reaches training data, and resuming a killed run by round."""

import pytest

from seqlab.data.text import Labelled, MixtureStream
from seqlab.core.errors import BadInput
from seqlab.formats.format import Format, FormatConfig
from seqlab.core.io import read_json, read_jsonl
from seqlab.self_improve.rounds import self_improve
from seqlab.runs import make_config
from seqlab.tasks import Example, get
from seqlab.tasks.arithmetic import Addition
from seqlab.self_improve.label_filters import length_filter, majority_vote, validity_filter
from seqlab.self_improve.config import SelfImproveConfig, label_report, mixture_weights, round_lengths


# -- filters ---------------------------------------------------------------------------------------
def test_length_filter_drops_labels_threshold_shorter_than_their_batch_longest():
    labels = ["12345", "1234", "123", "12", "99", "9"]
    assert length_filter(labels, threshold=2, batch_size=6) == [True, True, False, False, False, False]
    # batches are judged apart: the second batch's longest is "99"
    assert length_filter(labels, threshold=1, batch_size=3) == [True, False, False, True, True, False]


def test_majority_vote_keeps_labels_enough_models_agree_on():
    votes = [["a", "x", "p"], ["a", "y", "q"], ["a", "x", "r"], ["b", "x", "s"], ["a", "z", "t"]]
    labels, keep = majority_vote(votes, fraction=0.7)  # 4 of 5, as the paper
    assert labels[:2] == ["a", "x"] and keep == [True, False, False]
    _, keep = majority_vote(votes, fraction=0.6)  # 3 of 5
    assert keep == [True, True, False]


def test_validity_filter_uses_the_tasks_check():
    maze = get("maze", min_len=3, max_len=3, n_nodes=8)
    ex = maze.example(0, "train", 0)
    problem = Example(ex.fields, ex.ops, "", {})
    start, end = ex.fields[0], ex.fields[1]
    assert validity_filter(maze, [problem] * 3, [ex.answer, f"{start}>{end}", ex.answer + ">" + start]) == [
        True, False, False]


def test_mixture_weights_give_the_newest_round_its_share():
    w = mixture_weights(10, [1, 2], new_share=0.5)
    assert w[-1] == 0.5 and sum(w) == pytest.approx(1.0)
    assert w[0] == pytest.approx(0.5 * 10 / 13) and w[2] == pytest.approx(2 * w[1])


def test_mixture_stream_draws_labels_as_given_and_is_deterministic():
    task = get("addition", max_len=3)
    fmt = Format(FormatConfig(), task)
    problem = Example(("12", "34"), ("+", "="), "", {"n_digits": 2})
    stream = MixtureStream([(0.5, task), (0.5, [Labelled(problem, "999")])], fmt, seed=1, batch_size=16)
    batch = stream.batch(3)
    assert stream.batch(3).tokens.equal(batch.tokens)
    from seqlab.data.text import IGNORE
    from seqlab.formats.tokenizer import BOS, EOS

    prompt = [BOS] + fmt.tokenizer.encode("12+34=")
    labelled = [k for k, row in enumerate(batch.tokens.tolist()) if row[: len(prompt)] == prompt]
    assert 0 < len(labelled) < 16  # both sources drawn
    for k in labelled:  # the label, not the true answer (64, written "460"), is the target
        assert [t for t in batch.targets[k].tolist() if t != IGNORE] == fmt.tokenizer.encode("999") + [EOS]


# -- the loop --------------------------------------------------------------------------------------
def _run(**train):
    return make_config({
        "task": {"name": "addition", "min_len": 1, "max_len": 3},
        "format": {"reverse_output": True, "zero_pad": True, "max_offset": 4},
        "model": {"n_layers": 1, "d_model": 32, "n_heads": 2, "position": "coupling"},
        "train": {"steps": 20, "batch_size": 16, "lr": 3e-3, "warmup": 2, "eval_every": 20, "eval_n": 8,
                  "checkpoint_every": 5, "log_every": 5, **train}})


SMOKE = dict(rounds=2, n_per_length=12, steps_per_round=10, decay_steps=5, eval_n=4, label_batch=8)


def test_round_lengths_follow_the_schedule():
    run = _run()
    assert round_lengths(run, SelfImproveConfig(), 1) == [(4, 4)]
    assert round_lengths(run, SelfImproveConfig(lengths_per_round=3), 2) == [(7, 7), (8, 8), (9, 9)]
    paper = SelfImproveConfig(rounds=2, schedule=[[[1, 6], [6, 1]], [[2, 6], [6, 2]]])
    assert round_lengths(run, paper, 2) == [(2, 6), (6, 2)]
    with pytest.raises(ValueError):
        SelfImproveConfig(rounds=3, schedule=[[[1, 6]]])


def test_a_schedule_of_operand_lengths_labels_exactly_those_sizes(tmp_path):
    run = make_config({
        "task": {"name": "multiplication-steps", "min_len": 1, "max_len": 2}, "format": {"reverse_output": False},
        "model": {"n_layers": 1, "d_model": 32, "n_heads": 2, "position": "none"},
        "train": {"steps": 10, "batch_size": 8, "warmup": 2, "eval_every": 10, "eval_n": 4, "checkpoint_every": 5}})
    si = SelfImproveConfig(labels="oracle", schedule=[[[1, 3], [3, 1]]], **{**SMOKE, "rounds": 1})
    reports = self_improve(tmp_path / "si", run, si, quiet=True)
    assert reports[1]["lengths"] == [[1, 3], [3, 1]]
    assert set(reports[1]["exact_match_at_round_sizes"]) == {"1x3", "3x1"}  # scored where it labelled
    rows = list(read_jsonl(tmp_path / "si" / "rounds" / "round-001" / "data.jsonl"))
    sizes = {(len(r["fields"][0]), len(r["fields"][1])) for r in rows}
    assert sizes == {(1, 3), (3, 1)} and len(rows) == 2 * SMOKE["n_per_length"]


def test_smoke_loop_writes_a_report_per_round(tmp_path):
    si = SelfImproveConfig(n_models=2, **SMOKE)
    reports = self_improve(tmp_path / "si", _run(), si, quiet=True)
    assert [r["round"] for r in reports] == [0, 1, 2]
    assert [r["lengths"] for r in reports[1:]] == [[[4, 4]], [[5, 5]]]
    assert reports[-1]["steps"] == 20 + 2 * 10
    for r in reports[1:]:
        labels = r["labels"]
        assert labels["n"] == 12 and 0 <= labels["kept"] <= 12
        rows = list(read_jsonl(tmp_path / "si" / "rounds" / f"round-{r['round']:03d}" / "data.jsonl"))
        assert len(rows) == labels["kept"]
    state = read_json(tmp_path / "si" / "models" / "m1" / "checkpoints" / "latest.json")
    assert state  # both models trained through every round


def _poison(monkeypatch, start_top: int):
    """True answers of problems past the starting range become a string no model writes."""
    original = Addition.problem

    def problem(self, lengths, k):
        ex = original(self, lengths, k)
        if max(lengths) > start_top:
            return Example(ex.fields, ex.ops, "7" * 30, ex.meta)
        return ex

    monkeypatch.setattr(Addition, "problem", problem)


@pytest.mark.parametrize("labels, leaks", [("self", False), ("oracle", True)])
def test_no_true_answer_reaches_training_data(tmp_path, monkeypatch, labels, leaks):
    _poison(monkeypatch, start_top=3)
    si = SelfImproveConfig(labels=labels, check_validity=False, **{**SMOKE, "rounds": 1})
    self_improve(tmp_path / "si", _run(), si, quiet=True)
    rows = list(read_jsonl(tmp_path / "si" / "rounds" / "round-001" / "data.jsonl"))
    assert rows and all("answer" not in r and set(r) == {"fields", "ops", "label", "meta"} for r in rows)
    poisoned = any("7" * 30 in r["label"] for r in rows)
    # the oracle control copies true answers, so the check can fail; self-labels never carry them
    assert poisoned == leaks


def test_a_killed_run_resumes_by_round_and_ends_as_an_uninterrupted_one(tmp_path, monkeypatch):
    import seqlab.self_improve.rounds as rounds

    si = SelfImproveConfig(**SMOKE)
    whole = self_improve(tmp_path / "whole", _run(), si, quiet=True)

    calls = {"n": 0}
    real = rounds._continue

    def dies_in_round_two(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(rounds, "_continue", dies_in_round_two)
    with pytest.raises(KeyboardInterrupt):
        self_improve(tmp_path / "killed", _run(), si, quiet=True)
    assert (tmp_path / "killed" / "rounds" / "round-001" / "done.json").exists()
    assert not (tmp_path / "killed" / "rounds" / "round-002" / "done.json").exists()
    monkeypatch.setattr(rounds, "_continue", real)
    resumed = self_improve(tmp_path / "killed", _run(), si, quiet=True)
    assert resumed == whole


def test_bad_self_improvement_input_is_refused(tmp_path):
    with pytest.raises(BadInput, match="target_accuracy"):
        self_improve(tmp_path / "a", _run(target_accuracy=0.9), SelfImproveConfig(**SMOKE))
    self_improve(tmp_path / "b", _run(), SelfImproveConfig(**{**SMOKE, "rounds": 1}), quiet=True)
    with pytest.raises(BadInput, match="different"):
        self_improve(tmp_path / "b", _run(), SelfImproveConfig(**{**SMOKE, "rounds": 1, "new_share": 0.3}))


def test_the_papers_multiplication_schedule():
    from seqlab.recipes.self_improve import multiplication_schedule

    sched = multiplication_schedule(5, 8)
    assert sched[:6] == [[[1, 6], [6, 1]], [[2, 6], [6, 2]], [[3, 6], [6, 3]], [[4, 6], [6, 4]], [[5, 6], [6, 5]],
                         [[6, 6]]]
    assert sched[6:] == [[[1, 7], [7, 1]], [[2, 7], [7, 2]]]
    # 10 x 10 comes in round 40, as the paper's 5x5-to-10x10 run in 41 rounds needs
    assert multiplication_schedule(5, 40)[-1] == [[10, 10]]


def test_arms_can_share_round_zero(tmp_path):
    from seqlab.self_improve.rounds import seeded_config
    from seqlab.runs import train

    run = _run()
    train(tmp_path / "r0" / "m0", seeded_config(run, 0), quiet=True)
    si = SelfImproveConfig(**{**SMOKE, "rounds": 1})
    shared = self_improve(tmp_path / "shared", run, si, quiet=True, round0=tmp_path / "r0")
    alone = self_improve(tmp_path / "alone", run, si, quiet=True)
    assert shared == alone  # the copied round 0 is the one it would have trained


@pytest.mark.slow
def test_worker_processes_train_and_label_as_one_process_does(tmp_path):
    run = _run(threads=1)  # one thread each way, so the arithmetic is the same
    si = SelfImproveConfig(n_models=2, **{**SMOKE, "rounds": 1})
    alone = self_improve(tmp_path / "one", run, si, quiet=True)
    side_by_side = self_improve(tmp_path / "two", run, si.model_copy(update={"workers": 2}), quiet=True)
    assert side_by_side == alone
    for k in (0, 1):
        assert (tmp_path / "two" / "models" / f"m{k}" / "checkpoints" / "latest.json").exists()
    # the number of workers is not part of the run: a run resumes with another
    assert self_improve(tmp_path / "two", run, si, quiet=True) == alone


def test_label_report_scores_the_vote_against_one_model():
    task = get("addition", min_len=1, max_len=2)
    fmt = Format(FormatConfig(reverse_output=False), task)
    truth = [task.example(0, "train", i) for i in range(4)]
    answers = [fmt.render(ex)[1] for ex in truth]
    single = [answers[0], "x", "x", "x"]  # model 0 alone: 1 of 4 right
    labels, keep = [answers[0], answers[1], "x", answers[3]], [True, True, False, True]
    rep = label_report(fmt, truth, labels, keep, single=single)
    assert rep["label_accuracy"] == 0.75 and rep["label_accuracy_kept"] == 1.0 and rep["kept_share"] == 0.75
    assert rep["label_accuracy_single"] == 0.25
    assert "label_accuracy_single" not in label_report(fmt, truth, labels, keep)


@pytest.mark.parametrize("args, message", [
    (["--workers", "0"], "positive whole number"),
    (["--task", "multiplication", "--lengths-per-round", "2"], "lengths-per-round"),
])
def test_bad_recipe_options_are_refused(tmp_path, args, message):
    from seqlab.recipes.base import run_recipe

    with pytest.raises(BadInput, match=message):
        run_recipe("self-improve", "smoke", 0, tmp_path / "out", args, quiet=True)


def test_a_task_changes_the_budget_only_where_it_says():
    from seqlab.recipes.base import task_settings
    from seqlab.recipes.self_improve import BUDGETS, TASKS

    mul = task_settings(BUDGETS["cpu"], TASKS["multiplication"], "cpu")
    assert mul["start_top"] == 3 and mul["model"]["n_layers"] == 2 and mul["self_improve"]["rounds"] == 2
    assert mul["model"]["d_model"] == BUDGETS["cpu"]["model"]["d_model"]  # the rest of the section stays
    assert mul["self_improve"]["n_per_length"] == BUDGETS["cpu"]["self_improve"]["n_per_length"]
    assert task_settings(BUDGETS["gpu"], TASKS["multiplication"], "gpu") == BUDGETS["gpu"]
    assert BUDGETS["cpu"]["model"]["n_layers"] == 1  # the budget itself is untouched


def test_a_finished_run_extends_with_more_rounds_as_if_run_whole(tmp_path):
    si = SelfImproveConfig(**{**SMOKE, "eval_lengths": [2, 4, 5]})
    whole = self_improve(tmp_path / "whole", _run(), si, quiet=True)
    self_improve(tmp_path / "grown", _run(), si.model_copy(update={"rounds": 1}), quiet=True)
    assert self_improve(tmp_path / "grown", _run(), si, quiet=True) == whole
    with pytest.raises(BadInput, match="different"):  # fewer rounds than it holds is another run
        self_improve(tmp_path / "grown", _run(), si.model_copy(update={"rounds": 1}), quiet=True)
