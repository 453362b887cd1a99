#!/usr/bin/env bash
# GRPO on Knights and Knaves (3-7 people) with Qwen2.5-3B-Instruct, in the spirit of Logic-RL's GRPO recipe
# (arXiv 2502.14768; its scripts: 8-16 prompts per step, 8-16 responses each, lr 3e-7 to 1e-6, KL loss 0.001
# low_var_kl, responses of 2k-4k tokens). Choices here, and why:
#   16 prompts x 8 responses, mini-batch 16: one on-policy update per step, as Logic-RL's effective setting;
#   lr 4e-7: between its 3e-7 and 1e-6; long reasoning is what the K&K reward trains, so 4096 response tokens;
#   micro-batch 4/GPU: 4 x 4.6k tokens stays under the official GSM8K run's worst case (32 x 1.5k) per GPU;
#   5,000 train / 500 test puzzles (1,000 / 100 per size, the K&K benchmark's counts), 2 epochs = 624 steps.
# `sh SCRIPT` (dash) ignores the #! line: as_bash.sh re-runs this script under bash, same arguments.
# shellcheck source-path=SCRIPTDIR source=as_bash.sh
. "$(dirname -- "$0")/as_bash.sh"
set -eu
# shellcheck source-path=SCRIPTDIR
# shellcheck source=common.sh
. "$(dirname -- "$0")/common.sh"
TASK=knights_knaves
LR=4e-7
TRAIN_BATCH=16
MINI_BATCH=16
MICRO_BATCH=4
LOGPROB_MICRO_BATCH=8
ROLLOUT_N=8
MAX_PROMPT=512         # the longest 7-person prompt is ~300 tokens with the chat template
MAX_RESPONSE=4096
EPOCHS=2
SAVE_FREQ=50
TEST_FREQ=25
grpo_main "$@"
