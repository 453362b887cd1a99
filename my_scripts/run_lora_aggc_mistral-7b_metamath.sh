#!/usr/bin/env bash
# LoRA SFT of Mistral-7B (base) on MetaMathQA (100,000 examples) with AGGC: the official AGGC LoRA recipe on verl's SFT
# trainer (sft_common.sh holds its settings), then merge and GSM8K evaluation. Usage: docs/sft.md. CLIP=global gives the LoRA baseline.
#   CLIP=global sh my_scripts/run_lora_aggc_mistral-7b_metamath.sh [hydra overrides...]   (or bash, or ./)
# `sh SCRIPT` (dash) ignores the #! line: as_bash.sh re-runs this script under bash, same arguments.
# shellcheck source-path=SCRIPTDIR source=as_bash.sh
. "$(dirname -- "$0")/as_bash.sh"
set -eu
# shellcheck source-path=SCRIPTDIR
# shellcheck source=sft_common.sh
. "$(dirname -- "$0")/sft_common.sh"
DEFAULT_MODEL=mistralai/Mistral-7B-v0.1
sft_main "$@"
