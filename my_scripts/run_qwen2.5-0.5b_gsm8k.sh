#!/usr/bin/env bash
# One-GPU smoke run: GRPO on GSM8K with Qwen2.5-0.5B-Instruct, tiny batches, 10 steps, a checkpoint at
# step 5 and 10, validation on 64 test questions. Checks a cluster set-up end to end in minutes, with the
# same code path as the full runs (clip engine, vLLM rollout, reward, checkpoint, merge).
# `sh SCRIPT` (dash) ignores the #! line: as_bash.sh re-runs this script under bash, same arguments.
# shellcheck source-path=SCRIPTDIR source=as_bash.sh
. "$(dirname -- "$0")/as_bash.sh"
set -eu
# shellcheck source-path=SCRIPTDIR
# shellcheck source=common.sh
. "$(dirname -- "$0")/common.sh"
DEFAULT_MODEL=Qwen/Qwen2.5-0.5B-Instruct
DEFAULT_N_GPUS=1
TRAIN_BATCH=16         # 16 prompts x 4 responses = 64 sequences per step
MINI_BATCH=8           # 2 PPO updates per step
MICRO_BATCH=8
LOGPROB_MICRO_BATCH=16
ROLLOUT_N=4
MAX_RESPONSE=512
EPOCHS=1
TOTAL_STEPS=10
VAL_MAX_SAMPLES=64
OFFLOAD=false          # 0.5B fits without offload; offload only slows a smoke run
GPU_MEM_UTIL=0.4
SAVE_FREQ=5
TEST_FREQ=5
grpo_main "$@"
