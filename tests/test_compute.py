"""FLOPs accounting (ets.analysis.compute) against a hand computation on a tiny Llama config."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from ets.analysis.compute import ModelShape, problem_compute, run_compute
from ets.analysis.report import main
from ets.trackers.wandb import summary_metrics
from tests.conftest import ROOT

TINY = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 256, "vocab_size": 100, "model_type": "llama"}
# root = 3-token prompt; 1 (2 tokens) and 2 (1 token) under the root; 3 (2 tokens) under 1
TREE = [{"id": 0, "parent": None, "tokens": 3}, {"id": 1, "parent": 0, "tokens": 2},
        {"id": 2, "parent": 0, "tokens": 1}, {"id": 3, "parent": 1, "tokens": 2}]


def test_matmul_params_hand_and_torch():
    shape = ModelShape.from_config(TINY)
    # per layer: q, o 64x64; k, v 64x(2*16); MLP 3x64x256; LM head 64x100
    assert shape.matmul_params == 2 * (2 * 4096 + 2 * 2048 + 3 * 16384) + 6400 == 129280
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in TINY.items() if k != "model_type"},
                                             tie_word_embeddings=False))
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert linear == shape.matmul_params


def test_block_flops_by_hand():
    shape = ModelShape.from_config(TINY)
    # 2N per token + 4*L*d_attn = 512 per (token, key); 2 tokens after 3: keys 4 + 5 = 9
    assert shape.flops(2, 3) == 2 * 258560 + 512 * 9
    assert shape.flops(0, 7) == 0.0
    brute = sum(2 * 129280 + 512 * (i + 1) for i in range(5, 12))
    assert shape.flops(7, 5) == brute


def test_problem_compute_by_hand():
    shape = ModelShape.from_config(TINY)
    out = problem_compute(TREE, shape, shape)
    pol, prm = out["policy_flops"], out["prm_flops"]
    assert pol["prefill"] == 778752            # the prompt once: 3*258560 + 512*6
    assert pol["prefill_no_reuse"] == 2857984  # contexts 3, 3 and 5 from position 0
    assert pol["decode"] == 1306112            # 521728 + 260608 + 523776
    assert pol["total"] == 778752 + 1306112
    assert prm["prefill"] == 2084864           # prompt + every step once
    assert prm["prefill_no_reuse"] == 4164096  # whole paths of 5, 4 and 7 tokens
    assert prm["decode"] == 0
    assert out["total_flops"] == pol["total"] + prm["total"]
    assert out["tokens"] == {"policy_prefill": 3, "policy_prefill_no_reuse": 11, "policy_decode": 5,
                             "prm_read": 8, "prm_read_no_reuse": 16}
    free = problem_compute(TREE, shape, None, prm_reads=False)
    assert free["prm_flops"]["total"] == 0 and free["tokens"]["prm_read"] == 0
    assert free["total_flops"] == pol["total"]
    assert problem_compute(TREE, None, shape)["policy_flops"] is None


def test_shapes_from_folder_and_logprob(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    cfg = {"policy": {"_target_": "ets.policies.hf.HFPolicy", "model": str(tmp_path)},
           "prm": {"_target_": "ets.prms.logprob.LogprobPRM"}}
    out = run_compute([{"id": "0", "tree": TREE}, {"id": "1", "tree": TREE}], cfg)
    assert out["shapes"]["policy"]["source"] == str(tmp_path / "config.json")
    assert out["policy_flops"]["decode"] == 2 * 1306112
    assert out["prm_flops"]["total"] == 0
    assert out["per_problem_mean"]["total_flops"] == 778752 + 1306112
    assert out["per_problem"]["1"] == {"policy": 778752 + 1306112, "prm": 0,
                                       "total": 778752 + 1306112, "total_no_reuse": 2857984 + 1306112}
    cfg["prm"] = {"_target_": "ets.prms.math_shepherd.MathShepherdPRM", "model": str(tmp_path / "nope")}
    out = run_compute([{"tree": TREE}], cfg)
    assert out["prm_flops"] is None and "config.json" in out["shapes"]["prm"]["error"]
    assert out["total_flops"] is None


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real synthetic run."""
    out = tmp_path_factory.mktemp("compute") / "run"
    proc = subprocess.run([sys.executable, "-m", "ets", "+experiment=synthetic", "dataset.limit=2",
                           "search.width=4", f"hydra.run.dir={out}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def test_synthetic_run_summary(run):
    """summary.compute counts the tokens the search generated, from the configured shape."""
    summary = json.loads((run / "summary.json").read_text())
    comp = summary["compute"]
    assert comp["tokens"]["policy_decode"] == summary["tokens_generated"]
    records = [json.loads(line) for line in (run / "problems.jsonl").read_text().splitlines()]
    assert comp["tokens"]["policy_prefill"] == sum(r["prompt_tokens"] for r in records)
    assert comp["shapes"]["policy"]["source"] == "compute.synthetic_shape"
    assert 0 < comp["policy_flops"]["prefill"] < comp["policy_flops"]["prefill_no_reuse"]
    flat = summary_metrics(summary)  # what W&B gets
    assert flat["compute/total_flops"] == comp["total_flops"]
    assert flat["compute/policy_flops/decode"] == comp["policy_flops"]["decode"]
    assert flat["compute/tokens/prm_read"] == comp["tokens"]["prm_read"]


def _row(md: str, header: str) -> dict[str, str]:
    lines = [line for line in md[md.index("## Runs"):].splitlines() if line.startswith("| ")]
    cols = [c.strip() for c in lines[0].strip("|").split("|")]
    vals = [c.strip() for c in lines[1].strip("|").split("|")]
    return dict(zip(cols, vals))[header]


def test_report_columns_and_pareto_x(run, tmp_path):
    comp = json.loads((run / "summary.json").read_text())["compute"]
    assert main([str(run), "--out", str(tmp_path / "a"), "--pareto-x", "flops", "--budget", "none"]) == 0
    md = (tmp_path / "a" / "report.md").read_text()
    assert _row(md, "TFLOPs") == f"{comp['total_flops'] / 1e12:.3f}"
    assert _row(md, "TFLOPs no reuse") == f"{comp['total_flops_no_reuse'] / 1e12:.3f}"
    assert _row(md, "policy decode TF") == f"{comp['policy_flops']['decode'] / 1e12:.3f}"
    assert (tmp_path / "a" / "accuracy_vs_flops.png").stat().st_size > 1000
    assert "accuracy_vs_flops.png" in md
    # a run written before compute existed: the report computes it from problems.jsonl
    old = tmp_path / "old"
    shutil.copytree(run, old)
    summary = json.loads((old / "summary.json").read_text())
    del summary["compute"]
    (old / "summary.json").write_text(json.dumps(summary))
    assert main([str(old), "--out", str(tmp_path / "b"), "--budget", "none"]) == 0
    assert _row((tmp_path / "b" / "report.md").read_text(), "TFLOPs") == f"{comp['total_flops'] / 1e12:.3f}"
    with pytest.raises(SystemExit):
        main([str(run), "--out", str(tmp_path / "c"), "--pareto-x", "nope"])  # tokens: a valid axis now


def test_against_torch_flop_counter():
    """torch's FlopCounterMode on a real tiny Llama (eager attention) counts exactly our
    decode FLOPs; its prefill is the full n x n attention square (the eager kernel computes
    the masked half too), ours the causal half: 2N·n + 4·L·d·n² vs 2N·n + 4·L·d·n(n+1)/2."""
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = {k: v for k, v in TINY.items() if k != "model_type"}
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**cfg, tie_word_embeddings=False,
                                         attn_implementation="eager")).eval()
    shape = ModelShape.from_config(TINY)
    ids = torch.randint(0, 100, (1, 7))
    with torch.no_grad():
        cache = model(ids, use_cache=True).past_key_values
        decode = FlopCounterMode(display=False)
        with decode:
            model(torch.tensor([[5]]), past_key_values=cache, use_cache=True)
        prefill = FlopCounterMode(display=False)
        with prefill:
            model(ids, use_cache=False)
    assert decode.get_total_flops() == shape.flops(1, 7)  # one token after 7
    square = 2 * shape.matmul_params * 7 + 4 * 2 * 64 * 7 * 7
    assert prefill.get_total_flops() == square
    assert square - shape.flops(7) == 4 * 2 * 64 * (49 - 28)
