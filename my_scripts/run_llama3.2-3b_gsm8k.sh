#!/usr/bin/env bash
# GRPO on GSM8K with Llama-3.2-3B-Instruct: the official Qwen2.5-3B run's settings, another model family
# (same size class, so the same batch sizes, offload and vLLM share fit). The model is gated on the
# Hugging Face hub: accept its licence and log in (huggingface-cli login) on every node, or set MODEL to a copy.
# `sh SCRIPT` (dash) ignores the #! line: as_bash.sh re-runs this script under bash, same arguments.
# shellcheck source-path=SCRIPTDIR source=as_bash.sh
. "$(dirname -- "$0")/as_bash.sh"
set -eu
# shellcheck source-path=SCRIPTDIR
# shellcheck source=common.sh
. "$(dirname -- "$0")/common.sh"
DEFAULT_MODEL=meta-llama/Llama-3.2-3B-Instruct
grpo_main "$@"
