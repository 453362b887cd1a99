"""Where our primary Hydra configs live (they extend verl's own, from ``pkg://verl.trainer.config``)."""

from __future__ import annotations

from pathlib import Path

#: The repository's ``configs/`` folder (the project is installed editable, as the README says).
CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")
#: ``python -m aggc_rl.train``: verl's ``ppo_trainer`` plus the clip switch.
PPO_CONFIG_NAME = "aggc_ppo_trainer"
#: ``python -m aggc_rl.sft``: verl's ``sft_trainer_engine`` plus the clip switch on ``engine``.
SFT_CONFIG_NAME = "aggc_sft_trainer"
