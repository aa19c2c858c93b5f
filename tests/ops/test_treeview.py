"""``python -m ets.report RUN --trees``: self-contained HTML pages, loaded in headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ets.analysis.report import main
from ets.analysis.treeview import layout, node_status, score_colour
from tests.conftest import ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    proc = subprocess.run([sys.executable, "-m", "ets", "+experiment=synthetic", "dataset.limit=3",
                           "search.width=6", "selector=rebase", f"hydra.run.dir={out}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "problems.jsonl").read_text().splitlines()]


def _expected(rec: dict) -> dict[str, int]:
    """Statuses derived independently from the tree rows."""
    parents = {r["parent"] for r in rec["tree"]}
    out = {"finished": 0, "expanded": 0, "pruned": 0}
    for r in rec["tree"][1:]:
        out["finished" if r["finished"] else "expanded" if r["id"] in parents else "pruned"] += 1
    return out


def test_pages_written_for_ids(run, tmp_path):
    recs = _records(run)
    assert main([str(run), "--out", str(tmp_path), "--trees", recs[1]["id"]]) == 0
    pages = sorted((tmp_path / "trees").rglob("*.html"))
    assert [p.stem for p in pages] == [recs[1]["id"]]
    text = pages[0].read_text()
    assert "src=" not in text and "href=" not in text and "http://" not in text.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")  # nothing to fetch at view time
    assert text.count('class="edge"') == len(recs[1]["tree"]) - 1
    from ets.analysis.compute import run_compute
    from ets.rundir.runs import load_runs

    flops = run_compute([recs[1]], load_runs(run)[0].config)["total_flops"]
    assert f"{flops / 1e12:.4g} TFLOPs" in text  # the problem's compute in the header
    with pytest.raises(SystemExit, match="no problem"):
        main([str(run), "--out", str(tmp_path), "--trees", "no-such-id"])


def test_layout_and_status():
    tree = [{"id": 0, "parent": None, "depth": 0}, {"id": 1, "parent": 0, "depth": 1},
            {"id": 2, "parent": 0, "depth": 1}, {"id": 3, "parent": 1, "depth": 2},
            {"id": 4, "parent": 1, "depth": 2}]
    pos = layout(tree)
    assert pos[3][0] < pos[4][0] < pos[2][0]  # leaves in order, left to right
    assert pos[1][0] == (pos[3][0] + pos[4][0]) / 2 and pos[0][0] == (pos[1][0] + pos[2][0]) / 2
    assert pos[0][1] < pos[1][1] < pos[3][1] and pos[1][1] == pos[2][1]
    assert node_status({"parent": 0, "finished": False}, False) == "pruned"
    assert node_status({"parent": 0, "finished": False}, True) == "expanded"
    assert node_status({"parent": 0, "finished": True}, False) == "finished"
    assert score_colour(0.0) == "hsl(0,70%,50%)" and score_colour(1.0) == "hsl(120,70%,50%)"


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; "
                    ".ci/run installs it)")
def test_pages_in_headless_chromium(run, tmp_path):
    assert main([str(run), "--out", str(tmp_path), "--trees"]) == 0
    recs = {r["id"]: r for r in _records(run)}
    pages = sorted((tmp_path / "trees").rglob("*.html"))
    assert {p.stem for p in pages} == set(recs)
    for i, page in enumerate(pages):
        rec = recs[page.stem]
        dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / f'ud{i}'}", "--dump-dom",
                              page.as_uri()], capture_output=True, text=True, timeout=120).stdout
        assert dom.count('class="edge"') == len(rec["tree"]) - 1
        assert dom.count('class="node') == len(rec["tree"])
        want = _expected(rec)
        got = {s: dom.count(f'class="node {s}') for s in want}
        assert got == want
        assert dom.count('class="node finished correct') == sum(
            1 for r in rec["tree"] if r["finished"] and r["answer"] is not None
            and int(r["answer"]) == int(rec["gold"]))
        assert dom.count("<tr><td>") >= len(rec["votes"])
        # the script ran: it filled the side panel with the root's details (the prompt)
        panel = dom[dom.index('id="panel"'):]
        assert "node 0" in panel[:400] and "status: root" in panel[:400]
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'ud-shot'}", f"--screenshot={shot}",
                    "--window-size=1000,700", pages[0].as_uri()], capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=float)
    assert pixels.shape[:2] == (700, 1000)
    assert pixels.std() > 10  # not blank
    # coloured score fills: some pixels far from grey
    assert (np.ptp(pixels, axis=2) > 80).mean() > 0.0005


def test_ets_pages_carry_the_cluster_of_every_candidate(tmp_path):
    """An ETS run records each candidate's cluster; its page marks exactly those nodes."""
    out = tmp_path / "ets"
    proc = subprocess.run([sys.executable, "-m", "ets", "+experiment=synthetic", "dataset.limit=1",
                           "search.width=6", "selector=ets", f"hydra.run.dir={out}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    [rec] = _records(out)
    labelled = [r for r in rec["tree"] if "cluster" in r]
    assert labelled and all(not r["finished"] for r in labelled)  # only candidates get one
    assert main([str(out), "--out", str(tmp_path / "pages"), "--trees"]) == 0
    [page] = (tmp_path / "pages" / "trees").rglob("*.html")
    assert page.read_text().count("data-cluster=") == len(labelled)
