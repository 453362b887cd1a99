#!/usr/bin/env bash
# LoRA SFT of Llama-2-7B (base; gated: accept the licence and run huggingface-cli login) on MetaMathQA (100,000 examples) with AGGC: the official AGGC LoRA recipe on verl's SFT
# trainer (sft_common.sh holds its settings), then merge and GSM8K evaluation. Usage: README.md, "Supervised
# fine-tuning". CLIP=global gives the LoRA baseline.
#   CLIP=global sh my_scripts/run_lora_aggc_llama2-7b_metamath.sh [hydra overrides...]   (or bash, or ./)
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
# shellcheck source=sft_common.sh
. "$(dirname -- "$0")/sft_common.sh"
DEFAULT_MODEL=meta-llama/Llama-2-7b-hf
sft_main "$@"
