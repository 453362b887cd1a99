#!/usr/bin/env bash
# LoRA SFT of Llama-2-7B (base; gated: accept the licence and run huggingface-cli login) on MetaMathQA (100,000 examples) with AGGC: the official AGGC LoRA recipe on verl's SFT
# trainer (sft_common.sh holds its settings), then merge and GSM8K evaluation. Usage: docs/sft.md. CLIP=global gives the LoRA baseline.
#   CLIP=global sh my_scripts/run_lora_aggc_llama2-7b_metamath.sh [hydra overrides...]   (or bash, or ./)
# `sh SCRIPT` (dash) ignores the #! line: as_bash.sh re-runs this script under bash, same arguments.
# shellcheck source-path=SCRIPTDIR source=as_bash.sh
. "$(dirname -- "$0")/as_bash.sh"
set -eu
# shellcheck source-path=SCRIPTDIR
# shellcheck source=sft_common.sh
. "$(dirname -- "$0")/sft_common.sh"
DEFAULT_MODEL=meta-llama/Llama-2-7b-hf
sft_main "$@"
