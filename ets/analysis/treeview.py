"""Self-contained HTML viewers of search trees: ``python -m ets.report RUN --trees [IDS]``.

One page per problem (``OUT/trees/<run>/<problem id>.html``), with everything inline (SVG,
CSS, a few lines of JS, the data as JSON): nothing is fetched at view time. The tree is
drawn top-down by depth; a node's fill is its PRM score (red 0 → green 1, grey when
unscored). Outline: finished nodes are squares, green when their answer is correct and red
when not; a node the selector expanded has children; a live (unfinished) node without
children was pruned by the selector (dashed, faded). Hovering shows a node's step; clicking
shows its step text, score, answer and, where the record has them (``cluster`` on tree
rows), its ETS cluster. Below the tree: the votes over answers and each vote's prediction.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ets.analysis.compute import is_free_prm, problem_compute, resolve_shapes
from ets.rundir.results import read_records

X_GAP, Y_GAP, R, PAD = 22, 70, 7, 30


def node_status(row: dict[str, Any], has_children: bool) -> str:
    """``root``, ``finished``, ``expanded`` (has children) or ``pruned`` (live, no children)."""
    if row["parent"] is None:
        return "root"
    if row.get("finished"):
        return "finished"
    return "expanded" if has_children else "pruned"


def layout(tree: Sequence[dict[str, Any]]) -> dict[int, tuple[float, float]]:
    """Tidy top-down positions: leaves on consecutive slots (in node-id order under each
    parent), a parent centred over its children, y by depth."""
    kids: dict[int, list[int]] = {row["id"]: [] for row in tree}
    depth = {row["id"]: row["depth"] for row in tree}
    root = None
    for row in tree:
        if row["parent"] is None:
            root = row["id"]
        else:
            kids[row["parent"]].append(row["id"])
    pos: dict[int, tuple[float, float]] = {}
    slot = 0
    # iterative post-order (trees are up to ~40 deep and thousands wide)
    stack: list[tuple[int, bool]] = [(root, False)] if root is not None else []
    while stack:
        nid, done = stack.pop()
        y = PAD + depth[nid] * Y_GAP
        if not kids[nid]:
            pos[nid] = (PAD + slot * X_GAP, y)
            slot += 1
        elif done:
            xs = [pos[c][0] for c in kids[nid]]
            pos[nid] = ((min(xs) + max(xs)) / 2, y)
        else:
            stack.append((nid, True))
            stack.extend((c, False) for c in reversed(kids[nid]))
    return pos


def score_colour(score: float | None) -> str:
    """Red (0) through yellow to green (1); grey for no score (scores clipped to [0, 1])."""
    if score is None:
        return "#bbbbbb"
    s = min(1.0, max(0.0, float(score)))
    return f"hsl({120 * s:.0f},70%,50%)"


def node_correct(record: dict[str, Any], answer: str | None, grader: Any | None) -> bool | None:
    """Whether a finished node's answer matches the gold (None when it has no answer)."""
    if answer is None:
        return None
    if grader is not None:
        try:
            return bool(grader.equivalent(str(record["gold"]), answer))
        except Exception:  # noqa: BLE001 - fall back to the votes' own verdicts
            pass
    for v in record.get("votes", []):
        if v.get("answer") == answer:
            return bool(v.get("correct"))
    return None


_CSS = """
body{font:13px system-ui,sans-serif;margin:12px;color:#222}
h1{font-size:17px;margin:0 0 6px}
#wrap{display:flex;gap:14px;align-items:flex-start}
#svgbox{overflow:auto;border:1px solid #ccc;max-width:72vw;max-height:78vh;background:#fff}
#panel{flex:1;min-width:260px;border:1px solid #ccc;padding:8px;white-space:pre-wrap;
       font-family:ui-monospace,monospace;font-size:12px;max-height:78vh;overflow:auto}
.edge{stroke:#888;stroke-width:1}
.node{stroke:#333;stroke-width:1;cursor:pointer}
.node.pruned{stroke-dasharray:2 2;opacity:.45}
.node.finished.correct{stroke:#0a0;stroke-width:3}
.node.finished.wrong{stroke:#d00;stroke-width:3}
.node.sel{stroke:#06f;stroke-width:4}
table{border-collapse:collapse;margin-top:8px}td,th{border:1px solid #ccc;padding:2px 6px}
.legend span{display:inline-block;margin-right:12px}
"""

_JS = """
const DATA = JSON.parse(document.getElementById('data').textContent);
const byId = {}; for (const n of DATA.nodes) byId[n.id] = n;
function show(id) {
  document.querySelectorAll('.node.sel').forEach(e => e.classList.remove('sel'));
  const el = document.querySelector('.node[data-id="' + id + '"]'); if (el) el.classList.add('sel');
  const n = byId[id];
  const lines = ['node ' + n.id + '  depth ' + n.depth + '  parent ' + n.parent,
    'status: ' + n.status + (n.finish_reason ? ' (' + n.finish_reason + ')' : ''),
    'PRM score: ' + (n.score === null ? '-' : n.score.toFixed(4)), 'tokens: ' + n.tokens];
  if (n.answer !== null) lines.push('answer: ' + n.answer + (n.correct === null ? '' : n.correct ? '  (correct)' : '  (wrong)'));
  if (n.cluster !== null && n.cluster !== undefined) lines.push('cluster: ' + n.cluster);
  lines.push('', n.text);
  document.getElementById('panel').textContent = lines.join('\\n');
}
document.querySelectorAll('.node').forEach(e => e.addEventListener('click', () => show(+e.dataset.id)));
show(DATA.nodes[0].id);
const box = document.getElementById('svgbox'), root = document.querySelector('.node.root');
if (root) box.scrollLeft = root.cx.baseVal.value - box.clientWidth / 2;  // wide trees: root in view
"""


def _json_script(obj: Any) -> str:
    # "</" inside a <script> would end it early; "\\u003c" is the same string to JSON.parse
    return json.dumps(obj, ensure_ascii=False).replace("<", "\\u003c")


def render(record: dict[str, Any], grader: Any | None = None, title: str = "",
           compute: dict[str, Any] | None = None) -> str:
    """The HTML page of one problem record (``problems.jsonl`` line with its ``tree``);
    ``compute``: its :func:`ets.analysis.compute.problem_compute` (shown in the header)."""
    tree = record["tree"]
    has_kids = {row["parent"] for row in tree if row["parent"] is not None}
    pos = layout(tree)
    nodes = []
    for row in tree:
        status = node_status(row, row["id"] in has_kids)
        correct = node_correct(record, row.get("answer"), grader) if status == "finished" else None
        nodes.append({"id": row["id"], "parent": row["parent"], "depth": row["depth"],
                      "tokens": row.get("tokens"), "score": row.get("score"), "status": status,
                      "finish_reason": row.get("finish_reason"), "answer": row.get("answer"),
                      "correct": correct, "cluster": row.get("cluster"), "text": row.get("text", "")})
    width = max((x for x, _ in pos.values()), default=0) + 2 * PAD
    height = max((y for _, y in pos.values()), default=0) + 2 * PAD
    svg = [f'<svg id="tree" xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}">',
           '<rect width="100%" height="100%" fill="#fff"/>']
    for n in nodes:
        if n["parent"] is not None:
            (x1, y1), (x2, y2) = pos[n["parent"]], pos[n["id"]]
            svg.append(f'<line class="edge" data-from="{n["parent"]}" data-to="{n["id"]}" '
                       f'x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}"/>')
    for n in nodes:
        x, y = pos[n["id"]]
        cls = ["node", n["status"]]
        if n["correct"] is not None:
            cls.append("correct" if n["correct"] else "wrong")
        tip = html.escape(f"#{n['id']} score={n['score']}"
                          + (f" answer={n['answer']}" if n["answer"] is not None else "")
                          + (f" cluster={n['cluster']}" if n["cluster"] is not None else "")
                          + "\n" + n["text"][:400])
        attrs = (f'class="{" ".join(cls)}" data-id="{n["id"]}" fill="{score_colour(n["score"])}"'
                 + (f' data-cluster="{html.escape(str(n["cluster"]))}"' if n["cluster"] is not None else ""))
        if n["status"] == "finished":
            svg.append(f'<rect {attrs} x="{x - R:.1f}" y="{y - R:.1f}" width="{2 * R}" height="{2 * R}">'
                       f"<title>{tip}</title></rect>")
        else:
            svg.append(f'<circle {attrs} cx="{x:.1f}" cy="{y:.1f}" r="{R}"><title>{tip}</title></circle>')
    svg.append("</svg>")
    votes = "".join(
        f"<tr><td>{html.escape(str(v.get('answer')))}</td><td>{v.get('count')}</td>"
        f"<td>{float(v.get('weight', 0)):.4f}</td><td>{'yes' if v.get('correct') else 'no'}</td></tr>"
        for v in record.get("votes", []))
    preds = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(record.get('predictions', {}).get(k, '—')))}</td>"
        f"<td>{'yes' if c else 'no'}</td></tr>" for k, c in record.get("correct", {}).items())
    counts = {s: sum(n["status"] == s for n in nodes) for s in ("expanded", "pruned", "finished")}
    clusters = len({n["cluster"] for n in nodes if n["cluster"] is not None})
    summary = (f"{len(nodes)} nodes ({counts['expanded']} expanded, {counts['pruned']} pruned, "
               f"{counts['finished']} finished)" + (f", {clusters} clusters" if clusters else ""))
    if compute and compute.get("total_flops") is not None:
        summary += (f" · {compute['total_flops'] / 1e12:.4g} TFLOPs (policy "
                    f"{compute['policy_flops']['total'] / 1e12:.4g}, PRM {compute['prm_flops']['total'] / 1e12:.4g}; "
                    f"{compute['total_flops_no_reuse'] / 1e12:.4g} without prefix reuse)")
    name = html.escape(f"{title} — problem {record['id']}" if title else f"problem {record['id']}")
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{name}</title>",
        f"<style>{_CSS}</style></head><body>", f"<h1>{name}</h1>",
        f"<div>gold: <b>{html.escape(str(record.get('gold')))}</b> · {summary}</div>",
        '<div class="legend"><span>fill: PRM score (red 0 → green 1, grey none)</span>'
        "<span>square: finished (green edge correct, red wrong)</span>"
        "<span>dashed, faded: pruned by the selector</span><span>click a node for its step</span></div>",
        '<div id="wrap"><div id="svgbox">', *svg,
        '</div><div id="panel"></div></div>',
        "<h2>Votes</h2><table><tr><th>answer</th><th>count</th><th>weight</th><th>correct</th></tr>"
        f"{votes}</table>",
        f"<table><tr><th>vote</th><th>prediction</th><th>correct</th></tr>{preds}</table>",
        f'<script type="application/json" id="data">{_json_script({"nodes": nodes})}</script>',
        f"<script>{_JS}</script>", "</body></html>"])


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "problem"


def find_result_dirs(root: Path) -> list[Path]:
    """Dirs at or below ``root`` with a ``problems.jsonl`` (finished or still running)."""
    return sorted({p.parent for p in Path(root).rglob("problems.jsonl")})


def write_trees(root: Path, out: Path | None = None, ids: Sequence[str] | None = None) -> list[Path]:
    """Write the pages of every run below ``root`` (only problems ``ids`` if given).

    Returns:
        The pages written, ``OUT/trees/<run>/<problem id>.html`` (``OUT`` default ``root``).

    Raises:
        SystemExit: No ``problems.jsonl`` below ``root``, or none of ``ids`` found.
    """
    root = Path(root)
    dirs = find_result_dirs(root)
    if not dirs:
        raise SystemExit(f"ets.report --trees: no problems.jsonl below {root}")
    out_dir = (Path(out) if out is not None else root) / "trees"
    pages: list[Path] = []
    wanted = set(ids) if ids else None
    for d in dirs:
        rel = d.relative_to(root)
        name = str(rel) if str(rel) != "." else d.name
        grader, shapes = _grader(d), _shapes(d)
        for rec in read_records(d / "problems.jsonl"):
            if wanted is not None and str(rec["id"]) not in wanted:
                continue
            if not rec.get("tree"):
                continue
            page = out_dir / _safe(name) / f"{_safe(str(rec['id']))}.html"
            page.parent.mkdir(parents=True, exist_ok=True)
            comp = problem_compute(rec["tree"], *shapes) if shapes else None
            page.write_text(render(rec, grader, name, comp), encoding="utf-8")
            pages.append(page)
    if not pages:
        raise SystemExit(f"ets.report --trees: no problem with a tree matches {sorted(wanted or [])} "
                         f"below {root}")
    return pages


def _config(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "config.yaml"
    if not path.exists():
        return None
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)  # type: ignore[return-value]


def _shapes(run_dir: Path) -> tuple[Any, Any, bool] | None:
    """(policy shape, PRM shape, PRM reads) for :func:`ets.analysis.compute.problem_compute`."""
    config = _config(run_dir)
    if config is None:
        return None
    (policy, _), (prm, _) = resolve_shapes(config)
    return policy, prm, not is_free_prm(config)


def _grader(run_dir: Path) -> Any | None:
    config = _config(run_dir)
    if config is None:
        return None
    try:
        from ets.rundir.runs import load_grader

        return load_grader(config)
    except Exception:  # noqa: BLE001 - correctness then comes from the votes
        return None
