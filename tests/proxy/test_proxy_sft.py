"""The LoRA SFT run of the sweep (``lr_sweep --sft``): adapters folded into the base weights exactly, and a few
steps through the engine train the adapters (the rule sees only them), lower the held-out answer NLL and record
what the sweep reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aggc_rl.lr_sweep import __main__ as lr_sweep
from aggc_rl.lr_sweep import plans
from aggc_rl.proxy.sft import SFTSize, merged_weights

REPO = Path(__file__).resolve().parents[2]


def test_merged_weights_give_the_adapted_model_s_logits():
    """W + B A * alpha / r under the base model's names: the merged plain model computes what peft computes."""
    from peft import LoraConfig, get_peft_model

    from aggc_rl.tiny import TinySpec, build_model, build_tokenizer

    tok = build_tokenizer()
    spec = TinySpec(hidden_size=32, intermediate_size=64, num_hidden_layers=2, seed=0)
    adapted = get_peft_model(
        build_model(tok, spec), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0)
    )
    with torch.no_grad():  # peft starts B at zero (a no-op adapter): make it matter
        for name, p in adapted.named_parameters():
            if ".lora_B." in name:
                p.normal_(0, 0.5)
    plain = build_model(tok, TinySpec(hidden_size=32, intermediate_size=64, num_hidden_layers=2, seed=1))
    merged = merged_weights({n: p.detach() for n, p in adapted.named_parameters()}, rank=4, alpha=8)
    assert set(merged) == {n for n, _ in plain.named_parameters()}
    plain.load_state_dict(merged, strict=False)
    ids = torch.randint(4, 200, (2, 12))
    with torch.no_grad():
        want = adapted(input_ids=ids).logits
        got = plain(input_ids=ids).logits
        base = build_model(tok, spec)(input_ids=ids).logits
    assert not torch.allclose(want, base, atol=1e-3)  # the adapters change the output ...
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)  # ... and the merge reproduces it


def test_the_sft_arms_and_grid_are_the_issue_s():
    assert set(plans.SFT_ARMS) == {"none", "global", "aggc_lora", "adagc"}
    full = plans.FULL_SFT
    assert len(full["lrs"]) >= 5 and max(full["lrs"]) / min(full["lrs"]) >= 100
    assert full["seeds"] >= 5 and full["heldout"] >= 1000
    with pytest.raises(SystemExit):
        lr_sweep.parse_args(["--sft", "--arms", "aggc"])  # a GRPO arm is not an SFT arm


def test_size_check_names_the_bad_value():
    with pytest.raises(ValueError, match="lora_rank=0"):
        SFTSize(lora_rank=0).check()


_RUN = """
import json, sys
import torch
torch.set_num_threads(1)
from pathlib import Path
from aggc_rl.proxy import sft as proxy_sft
from aggc_rl.lr_sweep.plans import SFT_ARMS
from aggc_rl.proxy.policy import TEST_PROXY, heldout_puzzles, proxy_policy
model = proxy_policy(TEST_PROXY, root=Path(sys.argv[1]), eval_count=0, log=lambda *_: None)
size = proxy_sft.SFTSize(steps=6, batch=8, eval_every=6)
rec = proxy_sft.run(model, SFT_ARMS["aggc_lora"], 3e-3, 0, size, heldout_puzzles(64), log=lambda *_: None)
print("RESULT " + json.dumps(rec))
"""


@pytest.mark.slow
def test_a_few_lora_steps_train_the_adapters_and_lower_the_loss(tmp_path):
    env = dict(os.environ, VERL_PLATFORM="cpu", TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        [sys.executable, "-c", _RUN, str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rec = json.loads(proc.stdout.split("RESULT ", 1)[1])
    # The clip groups are the seven adapted projection types: the rule sees the adapters' gradients only.
    assert set(rec["clip_groups"]) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    losses = [s["loss"] for s in rec["steps"]]
    assert len(losses) == 6 and all(x > 0 for x in losses)
    start, end = rec["evals"]
    assert start["step"] == 0 and end["step"] == 6 and end["n"] == 64
    # The held-out answer NLL (teacher forced, the same 64 puzzles) falls: the adapters learnt the task.
    assert end["nll"] < start["nll"] - 0.01, (start["nll"], end["nll"])
    assert {"collapsed", "nonfinite", "final_acc", "start_acc"} <= set(rec)
