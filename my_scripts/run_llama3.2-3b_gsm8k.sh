#!/usr/bin/env bash
# GRPO on GSM8K with Llama-3.2-3B-Instruct: the official Qwen2.5-3B run's settings, another model family
# (same size class, so the same batch sizes, offload and vLLM share fit). The model is gated on the
# Hugging Face hub: accept its licence and log in (huggingface-cli login) on every node, or set MODEL to a copy.
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
DEFAULT_MODEL=meta-llama/Llama-3.2-3B-Instruct
grpo_main "$@"
