"""The sweeps' plans: the named arms, the learning-rate grids and the run sizes of the GRPO and LoRA SFT sweeps.

The ``none`` arm is global-norm clipping at max_norm 1e30 (it never clips). Warm-ups counted in steps are
shortened to fit runs of tens of steps: AdaGC ``warmup`` and ZClip ``warmup_steps`` = 5.
"""

from __future__ import annotations

from aggc_rl.inprocess.arms import NONE, Arm

#: The GRPO sweep's arms by name.
ARMS: dict[str, Arm] = {
    "none": NONE,
    "global": Arm("global"),
    "aggc": Arm("aggc"),
    "aggc_official": Arm("aggc_official"),
    "adagc": Arm("adagc", knobs={"warmup": 5}),
    "zclip": Arm("zclip", knobs={"warmup_steps": 5}),
}
#: The LoRA SFT sweep's arms (``--sft``): ``aggc_lora`` is AGGC with the official LoRA knobs.
SFT_ARMS: dict[str, Arm] = {
    "none": ARMS["none"],
    "global": ARMS["global"],
    "aggc_lora": Arm("aggc_lora"),
    "adagc": ARMS["adagc"],
}
#: From the stable end (3e-5, 1e-4: the held-out accuracy stays within ~3 points over 40 steps) through the
#: collapsing end (1e-3: 43% -> 11% in 40 steps; 3e-3: 0% within 20), measured on the proxy (docs/proxy.md).
LRS = (3e-5, 1e-4, 3e-4, 1e-3, 3e-3)
#: 8 prompts x 8 samples: twice the steps of 16 x 8 in the same time (~2.3 s per step on one core).
FULL = dict(arms=tuple(ARMS), lrs=LRS, seeds=3, steps=60, prompts=8, samples=8, eval_every=30, heldout=1000)
QUICK = dict(
    arms=("none", "global", "aggc"), lrs=(1e-4, 1e-3, 3e-3), seeds=1, steps=20, prompts=8, samples=8,
    eval_every=20, heldout=1000,
)  # fmt: skip
#: LoRA learning rates sit higher than full fine-tuning's; ``prompts`` is the SFT batch (``samples`` unused).
SFT_LRS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
FULL_SFT = dict(
    arms=tuple(SFT_ARMS), lrs=SFT_LRS, seeds=5, steps=120, prompts=16, samples=1, eval_every=120, heldout=1000
)
QUICK_SFT = dict(
    arms=("none", "global", "aggc_lora"), lrs=(3e-3, 1e-1), seeds=1, steps=30, prompts=16, samples=1,
    eval_every=30, heldout=1000,
)  # fmt: skip


def describe(arm: Arm) -> str:
    return " ".join([f"clip={arm.method}", *(f"{k}={v:g}" for k, v in arm.knobs.items())])
