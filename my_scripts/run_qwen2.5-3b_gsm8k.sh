#!/usr/bin/env bash
# GRPO on GSM8K with Qwen2.5-3B-Instruct and AGGC: the official AGGC run's settings (common.sh holds them:
# lr 1e-6, 512 prompts x 5 responses, mini-batch 128, micro 32/GPU, KL 0.001 low_var_kl, 512/1024 tokens,
# 15 epochs, 4 GPUs, offload, vLLM TP 1 at 0.6). Usage and environment: README.md, "GPU cluster runs".
#   CLIP=global sh my_scripts/run_qwen2.5-3b_gsm8k.sh [hydra overrides...]   (or bash, or ./)
# `sh SCRIPT` runs dash on Debian and Ubuntu, which ignores the #! line: re-run under bash, same arguments.
if [ -z "${BASH_VERSION:-}" ]; then
	if ! command -v bash >/dev/null 2>&1; then
		printf '[%s] error: this script needs bash, which is not on PATH; install bash (apt-get install bash)\n' "${0##*/}" >&2
		exit 1
	fi
	exec bash "$0" "$@"
fi
set -eu
# shellcheck source-path=SCRIPTDIR
# shellcheck source=common.sh
. "$(dirname -- "$0")/common.sh"
grpo_main "$@"
