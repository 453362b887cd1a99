#!/usr/bin/env bash
# GRPO on GSM8K with Qwen2.5-3B-Instruct and AGGC: the official AGGC run's settings (common.sh holds them:
# lr 1e-6, 512 prompts x 5 responses, mini-batch 128, micro 32/GPU, KL 0.001 low_var_kl, 512/1024 tokens,
# 15 epochs, 4 GPUs, offload, vLLM TP 1 at 0.6). Usage and environment: docs/cluster.md.
#   CLIP=global sh my_scripts/run_qwen2.5-3b_gsm8k.sh [hydra overrides...]   (or bash, or ./)
# `sh SCRIPT` (dash) ignores the #! line: as_bash.sh re-runs this script under bash, same arguments.
# shellcheck source-path=SCRIPTDIR source=as_bash.sh
. "$(dirname -- "$0")/as_bash.sh"
set -eu
# shellcheck source-path=SCRIPTDIR
# shellcheck source=common.sh
. "$(dirname -- "$0")/common.sh"
grpo_main "$@"
