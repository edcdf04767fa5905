"""seqlab.load for every kind of run: the model and config, batched generation that equals the evaluation's
greedy decoding, teacher-forced scores that equal a full forward pass, sampling, hook points; and one summary
and one train line for every kind."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import seqlab
from seqlab.core.errors import BadInput
from seqlab.runs import KINDS, make_config, train
from tests.conftest import TINY

TOKEN_TINY = ["task.name=mqar", "task.vocab_size=32", "task.input_seq_len=16", "task.num_kv_pairs=2", "model.n_layers=1",
              "model.d_model=16", "model.n_heads=2", "train.batch_size=8", "train.steps=12", "train.eval_every=6",
              "train.eval_n=8", "train.log_every=3", "train.checkpoint_every=6", "train.warmup=2", "train.threads=1"]
ICL_TINY = ["task.name=linear-regression", "task.n_dims=3", "task.n_points=7", "model.n_layers=1", "model.d_model=16",
            "model.n_heads=2", "model.max_points=7", "train.batch_size=8", "train.steps=12", "train.eval_every=6",
            "train.eval_n=8", "train.log_every=3", "train.checkpoint_every=6", "train.warmup=2", "train.threads=1"]
CONFIGS = {"text": TINY + ["train.steps=60", "train.lr=3e-3"], "token": TOKEN_TINY, "icl": ICL_TINY}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished run of each kind, and its training summary."""
    root = tmp_path_factory.mktemp("runs")
    return {kind: (root / kind, train(root / kind, make_config({}, overrides), quiet=True))
            for kind, overrides in CONFIGS.items()}


def test_every_registered_kind_is_tested():
    assert set(KINDS) == set(CONFIGS)


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_load_gives_the_model_config_and_task_of_every_kind(trained, kind):
    run_dir, summary = trained[kind]
    run = seqlab.load(run_dir)
    assert run.kind.name == kind == summary["kind"]
    assert run.step == summary["step"] == 12 or kind == "text"
    assert not run.model.training and run.model.n_params() == summary["n_params"]
    assert type(run.config).__name__ == type(make_config({}, CONFIGS[kind])).__name__
    assert (run.format is not None) == (kind == "text")
    assert run.hook_names()  # every model has hook points


def test_summaries_have_the_same_keys_for_every_kind(trained):
    keys = {kind: set(summary) for kind, (_, summary) in trained.items()}
    assert len({frozenset(k) for k in keys.values()}) == 1, keys
    assert trained["token"][1]["state_size"] > 0 and trained["text"][1]["state_size"] > 0


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_a_finished_run_reports_its_last_evaluation(cli, trained, kind):
    run_dir, summary = trained[kind]
    again = train(run_dir, quiet=True)
    logged = {k: v for k, v in summary["final_eval"].items() if not isinstance(v, dict)}  # metrics.jsonl keeps scalars
    assert again["step"] == summary["step"] and again["final_eval"] == logged != {}
    code, _, err = cli("train", "--out", run_dir, "--quiet")
    assert code == 0 and err.startswith(f"step {summary['step']}, ")
    assert KINDS.get(kind).eval_line(summary["final_eval"]) in err


def test_text_generation_equals_the_evaluations_greedy_decoding(trained):
    from seqlab.data.text import test_examples
    from seqlab.eval.decode import decode

    run = seqlab.load(trained["text"][0])
    pairs = test_examples(run.task, run.format, 0, 40)
    want = decode(run.model, [enc for _, enc in pairs], run.format, max_new=8)
    got = run.generate([ex.prompt for ex, _ in pairs], max_new_tokens=8, batch_size=7)
    assert got == want
    assert run.generate([ex for ex, _ in pairs[:3]], max_new_tokens=8) == want[:3]  # Examples are prompts too


def test_text_scores_equal_a_full_forward_pass(trained):
    from seqlab.formats.tokenizer import EOS

    run = seqlab.load(trained["text"][0])
    prompts, answers = ["12+3=", "7+88="], ["51", "59"]
    got = run.score(prompts, answers, end=True)
    for p, a, lp in zip(prompts, answers, got):
        e = run.encode(p)
        cont = run.tokenizer.encode(a) + [EOS]
        ids = torch.tensor([e.ids + cont])
        pos = torch.tensor([e.pos + [e.answer_pos_base + j for j in range(len(cont))]])
        with torch.no_grad():
            logp = run.model(ids, pos).log_softmax(-1)[0]
        want = sum(float(logp[len(e.ids) - 1 + j, t]) for j, t in enumerate(cont))
        assert lp == pytest.approx(want, abs=1e-5)
    assert run.score(prompts, answers) != got  # the end token is scored only when asked


def test_sampling_is_repeatable_and_top_k_1_is_greedy(trained):
    run = seqlab.load(trained["text"][0])
    prompts = ["12+3=", "7+88=", "5+5=", "999+1="]
    greedy = run.generate(prompts, max_new_tokens=6)
    assert run.generate(prompts, max_new_tokens=6, temperature=1.0, top_k=1, seed=3) == greedy
    a = run.generate(prompts * 8, max_new_tokens=6, temperature=2.0, seed=7)
    assert a == run.generate(prompts * 8, max_new_tokens=6, temperature=2.0, seed=7)
    assert len(set(a)) > len(set(greedy))  # hot sampling writes more than one answer per prompt
    with pytest.raises(BadInput):
        run.generate(prompts, temperature=-1)


def test_token_runs_generate_and_score_token_ids(trained):
    run = seqlab.load(trained["token"][0])
    tokens, _ = run.task.batch(0, "test", 0, 3)
    prompts = [list(map(int, row[:9])) for row in tokens]
    out = run.generate(prompts, max_new_tokens=4)
    assert all(len(o) == 4 and all(0 <= t < run.model.vocab_size for t in o) for o in out)
    with torch.no_grad():
        logits = run.model(torch.tensor(prompts))[:, -1]
    assert [o[0] for o in out] == logits.argmax(-1).tolist()
    scores = run.score(prompts, [[o[0]] for o in out])
    want = logits.log_softmax(-1).max(-1).values
    assert np.allclose(scores, want.tolist(), atol=1e-5)
    with pytest.raises(BadInput, match="token ids"):
        run.generate([[run.model.vocab_size]])


def test_in_context_runs_predict_vectors_and_refuse_text(trained):
    from seqlab.eval.icl_scoring import model_predictions

    run = seqlab.load(trained["icl"][0])
    p = run.task.prompts(0, "test", 0, 4)
    assert np.array_equal(run.predict(p.xs, p.ys), model_predictions(run.model, p.xs, p.ys))
    for call in (lambda: run.generate(["1+1="]), lambda: run.score(["a"], ["b"])):
        with pytest.raises(BadInput, match="read vectors"):
            call()
    out, cache = run.run_with_cache(torch.from_numpy(p.xs), torch.from_numpy(p.ys), names=lambda n: n == "hook_embed")
    assert list(cache) == ["hook_embed"] and out.shape == p.ys.shape


def test_hook_points_of_a_loaded_text_run(trained):
    run = seqlab.load(trained["text"][0])
    tokens, pos = run.batch(["12+3=", "45+6="])
    logits, cache = run.run_with_cache(tokens, pos, names=lambda n: n.endswith("hook_resid_post"))
    assert logits.shape[:2] == tokens.shape and cache and all(v.shape[:2] == tokens.shape for v in cache.values())
    with pytest.raises(BadInput, match="equal length"):
        run.batch(["1+2=", "12+3="])
    with pytest.raises(BadInput, match="not a prompt of addition"):
        run.encode("12+3")  # no "="
    with pytest.raises(BadInput, match="not in the tokenizer's vocabulary"):
        run.encode("12-3=")


def test_load_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(BadInput, match="does not exist"):
        seqlab.load(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(BadInput, match="not a seqlab run directory"):
        seqlab.load(tmp_path / "plain")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text('{"kind": "vision"}')
    with pytest.raises(BadInput, match="unknown kind 'vision'"):
        seqlab.load(tmp_path / "odd")
