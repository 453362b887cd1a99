#!/usr/bin/env bash
# Merge a verl FSDP checkpoint into a Hugging Face model directory and check that it loads.
#
#   my_scripts/merge_ckpt/merge.sh CKPT_DIR [STEP] [TARGET_DIR]
#
# CKPT_DIR   trainer.default_local_dir (OUT_DIR/checkpoints of the run scripts), or the run's OUT_DIR; RL
#            (global_step_N/actor/) and SFT (global_step_N/) checkpoints both work, LoRA ones are folded in.
# STEP       a global step N, or "latest" (default; also from the environment): the HIGHEST N of
#            global_step_N compared as numbers (global_step_10 after global_step_9), not the first directory
#            listed, which is what the official AGGC merge script took.
# TARGET_DIR where the model goes (default: CKPT_DIR/global_step_N/merged_hf; also from the environment).
# PYTHON     interpreter with verl and transformers (default: python3).
# Runs on CPU: verl's merger (python -m verl.model_merger merge --backend fsdp), then
# AutoModelForCausalLM.from_pretrained on the result. Exit status 2: bad arguments; 1: nothing to merge.
# `sh SCRIPT` (dash) ignores the #! line: as_bash.sh re-runs this script under bash, same arguments.
# shellcheck source-path=SCRIPTDIR source=../as_bash.sh
. "$(dirname -- "$0")/../as_bash.sh"
set -eu

NAME=merge.sh
die_usage() {
	printf '[%s] error: %s\n' "$NAME" "$*" >&2
	exit 2
}
die() {
	printf '[%s] error: %s\n' "$NAME" "$*" >&2
	exit 1
}
say() { printf '[%s] %s\n' "$NAME" "$*"; }

[ $# -ge 1 ] && [ $# -le 3 ] || die_usage "usage: merge.sh CKPT_DIR [STEP|latest] [TARGET_DIR] (got $# arguments)"
CKPT_DIR=$1
STEP=${2:-${STEP:-latest}}
TARGET_DIR=${3:-${TARGET_DIR:-}}
PYTHON=${PYTHON:-python3}

[ -d "$CKPT_DIR" ] || die "checkpoint directory CKPT_DIR='$CKPT_DIR' does not exist (give trainer.default_local_dir, i.e. OUT_DIR/checkpoints)"
CKPT_DIR=$(cd -- "$CKPT_DIR" && pwd)

# Step numbers of the global_step_N directories, ascending numerically (sort -n, not the listing order).
list_steps() {
	for dir in "$1"/global_step_*; do
		[ -d "$dir" ] || continue
		n=${dir##*/global_step_}
		case $n in '' | *[!0-9]*) continue ;; esac
		printf '%s\n' "$n"
	done | sort -n
}

steps=$(list_steps "$CKPT_DIR")
# A run directory (OUT_DIR of the run scripts) holds its checkpoints one level down.
if [ -z "$steps" ] && [ -d "$CKPT_DIR/checkpoints" ]; then
	CKPT_DIR=$CKPT_DIR/checkpoints
	steps=$(list_steps "$CKPT_DIR")
fi
[ -n "$steps" ] || die "no global_step_N directory in CKPT_DIR='$CKPT_DIR' (has the run reached trainer.save_freq yet?)"
available=$(printf '%s\n' "$steps" | tr '\n' ' ')

case $STEP in
latest) STEP=$(printf '%s\n' "$steps" | tail -n 1) ;;
'' | *[!0-9]*) die_usage "STEP='$STEP' is invalid; allowed: latest or one of: $available" ;;
*)
	STEP=$((10#$STEP)) # "010" names global_step_10
	printf '%s\n' "$steps" | grep -qx "$STEP" ||
		die "STEP=$STEP has no checkpoint in '$CKPT_DIR'; available steps: $available"
	;;
esac

ACTOR_DIR=$CKPT_DIR/global_step_$STEP/actor
# RL checkpoints keep the actor in actor/; SFT checkpoints (python -m aggc_rl.sft) keep it in the step directory.
if [ ! -d "$ACTOR_DIR" ] && [ -f "$CKPT_DIR/global_step_$STEP/fsdp_config.json" ]; then
	ACTOR_DIR=$CKPT_DIR/global_step_$STEP
fi
[ -f "$ACTOR_DIR/fsdp_config.json" ] ||
	die "'$ACTOR_DIR' has no fsdp_config.json: not a complete verl FSDP actor checkpoint (still being written, or deleted?)"
# Every rank's shard must be there, or the merger fails half-way (a save interrupted by a crash).
rank0=$(find "$ACTOR_DIR" -maxdepth 1 -name 'model_world_size_*_rank_0.pt' | head -n 1)
[ -n "$rank0" ] || die "'$ACTOR_DIR' has no model_world_size_W_rank_0.pt shard"
world=${rank0##*model_world_size_}
world=${world%%_rank_0.pt}
rank=0
while [ "$rank" -lt "$world" ]; do
	[ -f "$ACTOR_DIR/model_world_size_${world}_rank_$rank.pt" ] ||
		die "'$ACTOR_DIR' lacks model_world_size_${world}_rank_$rank.pt (world size $world): incomplete checkpoint; pick another STEP from: $available"
	rank=$((rank + 1))
done

TARGET_DIR=${TARGET_DIR:-$CKPT_DIR/global_step_$STEP/merged_hf}
say "merging step $STEP (available: $available) from $ACTOR_DIR ($world shard(s)) into $TARGET_DIR"
"$PYTHON" -m verl.model_merger merge --backend fsdp --local_dir "$ACTOR_DIR" --target_dir "$TARGET_DIR"

# The merger writes bf16 safetensors, config and tokenizer; prove transformers can load them on a CPU.
"$PYTHON" - "$TARGET_DIR" <<'PY' || die "the merged model in '$TARGET_DIR' does not load with transformers (see the error above)"
import os
import sys

from transformers import AutoModelForCausalLM, AutoTokenizer

path = sys.argv[1]
model = AutoModelForCausalLM.from_pretrained(path, dtype="auto", device_map=None)
adapter = os.path.join(path, "lora_adapter")
if os.path.isdir(adapter):
    # verl's merger writes LoRA runs as the base model plus lora_adapter/; fold the adapter in, so the
    # directory is the trained model for any loader (eval.run, vLLM). The adapter stays beside it.
    from peft import PeftModel

    model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.save_pretrained(path)
    print(f"[merge.sh] folded the LoRA adapter ({adapter}) into the model weights")
AutoTokenizer.from_pretrained(path)
n_params = sum(p.numel() for p in model.parameters())
print(f"[merge.sh] loaded with transformers: {type(model).__name__}, {n_params:,} parameters, {model.dtype}")
PY
TARGET_DIR=$(cd -- "$TARGET_DIR" && pwd)
say "merged model (step $STEP): $TARGET_DIR"
