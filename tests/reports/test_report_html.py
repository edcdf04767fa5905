"""report.html for a training run, a recipe's output folder and a sweep directory: one page with no external
reference and no script, an image per plot, the claims table; bad paths refused with nothing written. Where
Chromium is installed (`.ci/run` installs it) each page is rendered headless, offline: every image is in
the DOM and decodes, and the screenshot is not blank."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.conftest import TINY

SWEEP_RUN = {"task": {"name": "addition", "max_len": 3}, "model": {"n_layers": 1, "d_model": 16, "n_heads": 2},
             "train": {"batch_size": 16, "steps": 6, "eval_every": 3, "eval_n": 4, "log_every": 3,
                       "checkpoint_every": 6, "warmup": 2, "threads": 1}}
NASTY = "<script>alert('x')</script> & \"quotes\""  # a claim name that must come out as text


class Page(HTMLParser):
    """Every tag with its attributes, and the text of <title>."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.title, self._in_title = "", False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {k: v or "" for k, v in attrs}))
        self._in_title = tag == "title"

    def handle_endtag(self, tag):
        self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data

    def images(self) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == "img"]


def pngs(root: Path, exclude: str | None = None) -> list[str]:
    """File names of the PNGs a report must show (not checkpoints', not hidden)."""
    return sorted(p.name for p in root.rglob("*.png")
                  if not any(part.startswith(".") for part in p.relative_to(root).parts)
                  and not (exclude and p.relative_to(root).parts[0] == exclude))


def check_self_contained(html: str) -> Page:
    page = Page(html)
    assert html.startswith("<!DOCTYPE html>") and "<script" not in html.lower()
    for tag, attrs in page.tags:
        for name in ("src", "href"):
            value = attrs.get(name, "").strip().lower()
            assert not value.startswith(("http://", "https://", "//")), (tag, value[:80])
            if name in attrs and name == "src":
                assert value.startswith("data:image/"), (tag, value[:80])
        assert tag not in ("link", "iframe", "object", "embed")
    assert not re.search(r"https?://", " ".join(v for _, a in page.tags for k, v in a.items() if k in ("src", "href")))
    assert all(img["alt"] for img in page.images())
    return page


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """A tiny training run, an addition recipe folder at its smoke budget with claims and extra plots added,
    and a sweep of two seeds trained plus one config never started."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from seqlab import runs
    from seqlab.recipes import RECIPES
    from seqlab.recipes.base import Claim, run_recipe
    from seqlab.sweeps.sweep import load_sweep, write_sweep_json
    from seqlab.sweeps.backends import run_one

    root = tmp_path_factory.mktemp("reports")
    run = root / "run"
    runs.train(run, runs.make_config(None, TINY), quiet=True)

    recipe = root / "recipe"
    run_recipe("addition", "smoke", 0, recipe, [], quiet=True)
    results = json.loads((recipe / "results.json").read_text())
    judged = {**results["metrics"], "fake": 1.0}
    results["claims"] = [c.judge(judged) for c in RECIPES["addition"].claims]  # a smoke run learns nothing: the first fails
    results["claims"].append(Claim(NASTY, "this test", metric="fake", threshold=0.5).judge(judged))
    (recipe / "results.json").write_text(json.dumps(results, indent=2))
    for name in ("extra_a", "extra_b"):
        fig, ax = plt.subplots(figsize=(4, 3))
        ax.plot([0, 1, 2], [0, 1, 0.5], color="tab:red")
        fig.savefig(recipe / "plots" / f"{name}.png")
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.bar([0, 1], [1, 2])
    fig.savefig(recipe / "plots" / "bars.svg")
    plt.close(fig)

    file = root / "seeds.py"
    configs = [{**SWEEP_RUN, "train": {**SWEEP_RUN["train"], "seed": s}} for s in (0, 1)]
    configs.append({**SWEEP_RUN, "model": {**SWEEP_RUN["model"], "d_model": 32}})
    file.write_text(f"CONFIGS = {configs!r}\nOUT = {str(root / 'sweep')!r}\n")
    sweep = load_sweep(file)
    write_sweep_json(sweep)
    for r in sweep.runs[:2]:  # as a pool worker trains them; the third is left unstarted
        assert run_one(r.label, r.kind, r.config.to_json(), str(r.run_dir), 1)["status"] == "finished"
    return {"run": run, "recipe": recipe, "sweep": root / "sweep", "labels": [r.label for r in sweep.runs]}


def test_run_report(cli, dirs):
    run = dirs["run"]
    code, out, err = cli("report", run)
    assert code == 0, err
    assert out.split() == [str(run / "report.md"), str(run / "report.html")]
    assert (run / "report.md").read_text().startswith("# Run")
    html = (run / "report.html").read_text()
    page = check_self_contained(html)
    alts = [img["alt"] for img in page.images()]
    assert alts == ["loss by step (drawn from metrics.jsonl)"] + pngs(run)  # no plot of the loss: one is drawn
    for heading in ("Metrics", "Periodic evaluations (2)", "Plots", "Config"):
        assert heading in html
    assert "eval_exact_match" in html and "&quot;max_len&quot;: 3" in html


def test_recipe_report_has_every_plot_and_the_claims(cli, dirs):
    recipe = dirs["recipe"]
    code, _, err = cli("report", recipe)
    assert code == 0, err
    html = (recipe / "report.html").read_text()
    page = check_self_contained(html)
    images = page.images()
    png_alts = sorted(img["alt"] for img in images if img["alt"].endswith(".png"))
    assert png_alts == pngs(recipe) and len(png_alts) == 4  # its plot, its run's plot and the two added
    assert [img["alt"] for img in images if img["src"].startswith("data:image/svg+xml;base64,")] == ["bars.svg"]
    assert "seqlab reproduce addition --budget smoke --seed 0" in html
    claims = json.loads((recipe / "results.json").read_text())["claims"]
    holds = [a["class"] for t, a in page.tags if t == "td" and a.get("class") in ("yes", "no")]
    assert holds == ["yes" if c["holds"] else "no" for c in claims] and holds[0] == "no" and holds[-1] == "yes"
    assert f"{holds.count('yes')} of {len(claims)} claims hold" in html
    assert NASTY not in html and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;quotes&quot;" in html
    assert "| " + NASTY in (recipe / "report.md").read_text()  # report.md rewritten with the claims too


def test_sweep_report_lists_runs_and_links_their_reports(cli, dirs):
    sweep, labels = dirs["sweep"], dirs["labels"]
    code, _, err = cli("report", sweep / "runs" / labels[0])  # one run with a report of its own
    assert code == 0, err
    code, out, err = cli("report", sweep)
    assert code == 0, err
    assert out.split() == [str(sweep / "report.html")] and not (sweep / "report.md").exists()
    html = (sweep / "report.html").read_text()
    page = check_self_contained(html)
    assert sorted(img["alt"] for img in page.images()) == pngs(sweep, exclude="runs") == ["exact_match.png"]
    assert "Summary: exact_match (over seeds)" in html and (sweep / "summary.csv").is_file()
    hrefs = [a["href"] for t, a in page.tags if t == "a"]
    assert len(hrefs) == 1 and hrefs[0].startswith("runs/") and hrefs[0].endswith("/report.html")
    assert hrefs[0] == f"runs/{labels[0]}/report.html" and (sweep / hrefs[0]).is_file()  # relative, and it resolves
    rows = re.findall(r"<tr>(.*?)</tr>", html.split("Runs (3)")[1].split("</table>")[0])
    statuses = [re.findall(r"<td>(finished|not started|unfinished|failed)</td>", r) for r in rows if "<td" in r]
    assert statuses == [["finished"], ["finished"], ["not started"]]


@pytest.mark.parametrize("make", ["missing", "file", "empty", "other"])
def test_bad_path_exits_2_and_writes_nothing(cli, tmp_path, make):
    target = tmp_path / "target"
    if make == "file":
        target.write_text("not a folder")
    elif make in ("empty", "other"):
        target.mkdir()
        if make == "other":
            (target / "notes.txt").write_text("mine")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code, out, err = cli("report", target)
    assert code == 2 and not out
    assert len(err.strip().splitlines()) == 1 and err.startswith("error:") and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


# -- headless Chromium ------------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
COUNT_DECODED = ("<script>addEventListener('load', () => { document.title = String([...document.images]"
                 ".filter(i => i.complete && i.naturalWidth > 0).length); });</script>")


def chromium(page: Path, profile: Path, *args: str) -> str:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: a page that needed the network would show it
           f"--user-data-dir={profile}", *args, page.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (apt-get install chromium chromium-driver; "
                                             ".ci/run installs it)")
@pytest.mark.parametrize("kind", ["run", "recipe", "sweep"])
def test_chromium_renders_every_image(cli, dirs, tmp_path, kind):
    from PIL import Image

    folder = dirs[kind]
    code, _, err = cli("report", folder)
    assert code == 0, err
    report = folder / "report.html"
    html = report.read_text()
    n_images = len(Page(html).images())
    assert n_images >= 1

    dom = Page(chromium(report, tmp_path / "profile", "--dump-dom"))
    assert len(dom.images()) == n_images and all(img["src"].startswith("data:image/") for img in dom.images())

    probe = tmp_path / "probe.html"  # the page plus a script that counts the images that decoded
    probe.write_text(html.replace("</body>", COUNT_DECODED + "</body>"))
    counted = Page(chromium(probe, tmp_path / "profile", "--dump-dom")).title
    assert counted == str(n_images), f"{counted} of {n_images} images decoded"

    shot = tmp_path / "shot.png"
    chromium(report, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1200,2000")
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 2000)
    colours = image.getcolors(maxcolors=1 << 22)
    assert colours is not None and len(colours) > 1, "the screenshot is one colour"
    # Text and tables are greys; a coloured pixel comes from a plot (or a claims cell), so something rendered.
    assert any(max(c) - min(c) > 60 for _, c in colours), "nothing coloured in the screenshot"


def _one_line(code, out, err) -> str:
    assert code == 2 and not out, (code, out, err)
    assert len(err.strip().splitlines()) == 1 and err.startswith("error:") and "Traceback" not in err, err
    return err.strip()


@pytest.mark.parametrize("change, says", [
    (lambda r: r["claims"].append({"name": "x", "source": "y", "ours": 1.0, "threshold": 0.5}), "claim 4 has no 'holds'"),
    (lambda r: r["claims"].append("a claim"), "claim 4 is a str"),
    (lambda r: r.update(claims={"x": 1}), "'claims' is a dict, not a list"),
    (lambda r: r.update(metrics=[1, 2]), "'metrics' is a list, not a mapping"),
    (lambda r: r.update(metrics=0.5), "'metrics' is a float, not a mapping"),
    (lambda r: r["metrics"].pop("n@10"), "lacks what recipe 'addition' reports (no 'n@10')"),
    (lambda r: r.pop("seed"), "has no 'seed'"),
])
def test_a_malformed_results_json_is_one_line_and_writes_nothing(cli, dirs, tmp_path, change, says):
    recipe = tmp_path / "recipe"
    shutil.copytree(dirs["recipe"], recipe)
    results = json.loads((recipe / "results.json").read_text())
    change(results)
    (recipe / "results.json").write_text(json.dumps(results))
    before = {p.name: p.stat().st_mtime_ns for p in recipe.iterdir()}
    assert says in _one_line(*cli("report", recipe))
    assert {p.name: p.stat().st_mtime_ns for p in recipe.iterdir()} == before


def test_a_claim_without_the_optional_keys_renders(cli, dirs, tmp_path):
    """DESIGN.md's example claim has no `metric` or `direction`: such a results.json still reports."""
    recipe = tmp_path / "recipe"
    shutil.copytree(dirs["recipe"], recipe)
    results = json.loads((recipe / "results.json").read_text())
    results["claims"] = [{k: v for k, v in c.items() if k not in ("metric", "direction")} for c in results["claims"]]
    (recipe / "results.json").write_text(json.dumps(results))
    code, _, err = cli("report", recipe)
    assert code == 0, err
    assert f"of {len(results['claims'])} claims hold" in (recipe / "report.html").read_text()


@pytest.mark.parametrize("change, says", [
    (lambda m: m.update(varying=[5]), "'varying' is not a list of config keys"),
    (lambda m: m.update(varying=[["model.d_model"]]), "'varying' is not a list of config keys"),
    (lambda m: m["runs"][0].update(label="../../elsewhere"), "label '../../elsewhere' is not a folder name"),
    (lambda m: m["runs"][0].update(label=""), "label '' is not a folder name"),
    (lambda m: m["runs"][1].update(label=m["runs"][0]["label"]), "twice"),
    (lambda m: m.update(name=["x"]), "'name' is not a str"),
])
def test_a_malformed_sweep_json_is_one_line(cli, dirs, tmp_path, change, says):
    sweep = tmp_path / "sweep"
    shutil.copytree(dirs["sweep"], sweep)
    meta = json.loads((sweep / "sweep.json").read_text())
    change(meta)
    (sweep / "sweep.json").write_text(json.dumps(meta))
    assert says in _one_line(*cli("report", sweep))


def test_a_malformed_failures_json_is_ignored(cli, dirs, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(dirs["sweep"], sweep)
    (sweep / "failures.json").write_text(json.dumps([{"label": ["a"]}, {"label": {"b": 1}}, "c"]))
    code, _, err = cli("report", sweep)
    assert code == 0, err


def test_a_malformed_eval_file_is_skipped_and_said(cli, dirs, tmp_path):
    """A run's report renders what it can and names what it left out."""
    run = tmp_path / "run"
    shutil.copytree(dirs["run"], run)
    (run / "eval").mkdir(exist_ok=True)
    (run / "eval" / "odd.json").write_text(json.dumps({"exact_match_by_length": {"two": 1.0}, "n": 3}))
    code, _, err = cli("report", run)
    assert code == 0, err
    report = (run / "report.md").read_text()
    assert "## Skipped" in report and "eval/odd.json" in report and "## Training" in report
