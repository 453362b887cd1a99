# shellcheck shell=bash
# Shared logic of the LoRA SFT scripts (my_scripts/run_lora_*.sh). Sourced, never run on its own.
#
# The official AGGC LoRA recipe on verl's SFT trainer (python -m aggc_rl.sft): MetaMathQA, its first 100,000
# examples (the official `metamath:100000`); LoRA rank 128, alpha 128, dropout 0 (verl's LoRA has none), all
# seven projections; lr 2e-5, cosine schedule, 3% warm-up, one epoch; max length 512; effective batch 32;
# bf16; 4 GPUs. After training: merge the last checkpoint (LoRA folded in) and evaluate GSM8K's test split.
#
# Environment a user may set (anything else: pass Hydra overrides as arguments, they come last and win):
#   CLIP        aggc_lora (the recipe's AGGC knobs) | global (the LoRA baseline) | any clip method
#   MODEL       HF hub id or local directory                               (default: the script's model)
#   N_GPUS      GPUs on this node (torchrun --nproc_per_node)              (default: 4)
#   SEED        data shuffling and init seed                               (default: 42)
#   ATTN        flash_attention_2 (verl's default; needs flash-attn) | sdpa (default: flash_attention_2)
#   KEEP_CKPTS  checkpoints kept in OUT_DIR/checkpoints (0: keep all)      (default: 3)
#   DATA_DIR    train.parquet (messages), made here when missing           (default: <repo>/data/metamath_100k)
#   METAMATH_JSONL    offline MetaMathQA file (fields query, response)     (default: the Hugging Face hub)
#   GSM8K_TEST_JSONL  offline GSM8K test split for the evaluation          (default: the Hugging Face hub)
#   OUT_DIR     run directory: train.log, metrics.jsonl, command.sh, checkpoints/, merged/, eval/
#   PYTHON      interpreter with aggc_rl installed                         (default: python3)
#   WANDB_API_KEY  when set, wandb joins the console and file loggers
#   DRY_RUN=1   print the checks and every command, start nothing, exit 0
#   SKIP_EVAL=1 train only (no merge, no evaluation)
# Exit status: 2 for a bad setting, 1 for a missing prerequisite (GPUs, flash-attn, data), else the failing
# step's.

# shellcheck source-path=SCRIPTDIR
# shellcheck source=common.sh
. "$(dirname -- "$0")/common.sh"

LR=2e-5
LORA_RANK=128
LORA_ALPHA=128
TARGET_MODULES="[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]"
EFFECTIVE_BATCH=32
MICRO_BATCH=4              # sequences per GPU per forward/backward (accumulation up to the effective batch)
MAX_LENGTH=512
EPOCHS=1
WARMUP_RATIO=0.03
METAMATH_LIMIT=100000
DEFAULT_N_GPUS=4
CHAT_TEMPLATE=alpaca       # base models have none; the MetaMath instruction format

resolve_sft_settings() {
	CLIP=${CLIP:-aggc_lora}
	sft_methods=$CLIP_METHODS
	case " $sft_methods " in
	*" $CLIP "*) ;;
	*) die_usage "CLIP='$CLIP' is invalid; allowed: ${sft_methods// /, }" ;;
	esac
	MODEL=${MODEL:-$DEFAULT_MODEL}
	if [ -d "$MODEL" ]; then MODEL=$(cd -- "$MODEL" && pwd); fi
	N_GPUS=${N_GPUS:-$DEFAULT_N_GPUS}
	NNODES=1 # torchrun on this node
	SEED=${SEED:-42}
	is_uint "$N_GPUS" && [ "$N_GPUS" -ge 1 ] || die_usage "N_GPUS='$N_GPUS' is invalid; allowed: a whole number >= 1"
	is_uint "$SEED" || die_usage "SEED='$SEED' is invalid; allowed: a whole number >= 0"
	resolve_attn_and_keep
	per_step=$((N_GPUS * MICRO_BATCH))
	[ $((EFFECTIVE_BATCH % per_step)) -eq 0 ] ||
		die_usage "N_GPUS=$N_GPUS x micro-batch $MICRO_BATCH = $per_step does not divide the effective batch $EFFECTIVE_BATCH; allowed: N_GPUS in 1, 2, 4, 8"
	DATA_DIR=$(abspath "${DATA_DIR:-$REPO_DIR/data/metamath_100k}")
	model_tag=$(basename -- "$MODEL" | tr '[:upper:]' '[:lower:]')
	PROJECT=${PROJECT:-aggc_rl_sft}
	EXPERIMENT=${EXPERIMENT:-metamath_${model_tag}_lora_${CLIP}_s$SEED}
	case $EXPERIMENT in */* | '') die_usage "EXPERIMENT='$EXPERIMENT' is invalid; allowed: a non-empty name without '/'" ;; esac
	OUT_DIR=$(abspath "${OUT_DIR:-$REPO_DIR/outputs/$PROJECT/$EXPERIMENT}")
	PYTHON=${PYTHON:-python3}
	for var in MODEL DATA_DIR OUT_DIR PROJECT EXPERIMENT; do hydra_safe "$var" "$(eval "printf '%s' \"\$$var\"")"; done
	LOGGERS=console,file
	if [ -n "${WANDB_API_KEY:-}" ]; then LOGGERS=$LOGGERS,wandb; fi
}

build_sft_args() {
	SFT_ARGS=(
		"model.path=$MODEL"
		"model.lora_rank=$LORA_RANK"
		"model.lora_alpha=$LORA_ALPHA"
		"model.target_modules=$TARGET_MODULES"
		model.enable_gradient_checkpointing=true
		# verl 0.9.1 builds the model with flash_attention_2 unless told otherwise.
		"+model.override_config.attn_implementation=$ATTN"
		"chat_template=$CHAT_TEMPLATE"
		"data.train_files=$DATA_DIR/train.parquet"
		"data.train_batch_size=$EFFECTIVE_BATCH"
		"data.micro_batch_size_per_gpu=$MICRO_BATCH"
		"data.max_length=$MAX_LENGTH"
		data.truncation=right
		data.use_dynamic_bsz=false
		"engine.clip=$CLIP"
		engine.dtype=bfloat16
		"engine.seed=$SEED"
		"optim.lr=$LR"
		optim.lr_scheduler_type=cosine
		"optim.lr_warmup_steps_ratio=$WARMUP_RATIO"
		optim.weight_decay=0
		"trainer.total_epochs=$EPOCHS"
		"trainer.seed=$SEED"
		"trainer.n_gpus_per_node=$N_GPUS"
		"trainer.logger=[$LOGGERS]"
		"trainer.project_name=$PROJECT"
		"trainer.experiment_name=$EXPERIMENT"
		"trainer.default_local_dir=$OUT_DIR/checkpoints"
		trainer.save_freq=after_each_epoch
		"trainer.max_ckpt_to_keep=$KEEP_VALUE"
		"hydra.run.dir=$OUT_DIR/hydra"
	)
}

build_sft_data_cmd() {
	DATA_CMD=("$PYTHON" -m aggc_rl.data.metamath --out "$DATA_DIR" --limit "$METAMATH_LIMIT")
	if [ -n "${METAMATH_JSONL:-}" ]; then DATA_CMD+=(--jsonl "$METAMATH_JSONL"); fi
	EVAL_DATA_DIR=$OUT_DIR/gsm8k_test
	EVAL_DATA_CMD=("$PYTHON" -m aggc_rl.data.gsm8k --out "$EVAL_DATA_DIR")
	if [ -n "${GSM8K_TEST_JSONL:-}" ]; then EVAL_DATA_CMD+=(--test-jsonl "$GSM8K_TEST_JSONL"); fi
	MERGE_CMD=(bash "$REPO_DIR/my_scripts/merge_ckpt/merge.sh" "$OUT_DIR/checkpoints" latest "$OUT_DIR/merged")
	EVAL_CMD=("$PYTHON" -m eval.run --model "$OUT_DIR/merged" --task gsm8k --backend vllm --data "$EVAL_DATA_DIR"
		--out "$OUT_DIR/eval" --method flexible --max-new-tokens 512)
}

sft_data_ready() { [ -s "$DATA_DIR/train.parquet" ]; }

print_sft_dry_run() {
	say "DRY_RUN=1: nothing is checked, prepared or started; a real run would:"
	say "  check GPUs: nvidia-smi lists >= N_GPUS=$N_GPUS usable GPU(s)"
	if [ "$ATTN" = flash_attention_2 ]; then
		say "  check attention: ATTN=flash_attention_2 needs flash_attn: $(flash_attn_note)"
	else
		say "  check attention: ATTN=$ATTN needs no extra package"
	fi
	if sft_data_ready; then say "  data: $DATA_DIR/train.parquet present"; else say "  data: would run: ${DATA_CMD[*]}"; fi
	say "  log to: console, $OUT_DIR/train.log, $OUT_DIR/metrics.jsonl (trainer.logger=[$LOGGERS])"
	echo "command:"
	printf '%q ' "${CMD[@]}"
	printf '\n'
	if [ "${SKIP_EVAL:-0}" != 1 ]; then
		echo "then:"
		printf '%q ' "${MERGE_CMD[@]}"
		printf '\n'
		printf '%q ' "${EVAL_DATA_CMD[@]}"
		printf '\n'
		printf '%q ' "${EVAL_CMD[@]}"
		printf '\n'
	fi
	echo "BEGIN_HYDRA_ARGS"
	printf '%s\n' "${SFT_ARGS[@]}" "$@"
	echo "END_HYDRA_ARGS"
}

sft_main() {
	set -o pipefail
	resolve_sft_settings
	build_sft_args
	build_sft_data_cmd
	CMD=(env "VERL_FILE_LOGGER_PATH=$OUT_DIR/metrics.jsonl" "$PYTHON" -m torch.distributed.run
		"--nproc_per_node=$N_GPUS" -m aggc_rl.sft "${SFT_ARGS[@]}" "$@")
	if [ "${DRY_RUN:-0}" = 1 ]; then
		print_sft_dry_run "$@"
		return 0
	fi
	check_gpus
	check_attention
	check_wandb
	if ! sft_data_ready; then
		say "data: preparing: ${DATA_CMD[*]}"
		"${DATA_CMD[@]}" || die_missing "could not prepare MetaMathQA in DATA_DIR=$DATA_DIR (offline? set METAMATH_JSONL)"
	fi
	mkdir -p "$OUT_DIR"
	{
		printf '%q ' "${CMD[@]}"
		printf '\n'
	} >"$OUT_DIR/command.sh"
	say "starting: ${CMD[*]}"
	"${CMD[@]}" 2>&1 | tee -a "$OUT_DIR/train.log"
	if [ "${SKIP_EVAL:-0}" = 1 ]; then return 0; fi
	"${MERGE_CMD[@]}"
	"${EVAL_DATA_CMD[@]}" || die_missing "could not prepare the GSM8K test split (offline? set GSM8K_TEST_JSONL)"
	"${EVAL_CMD[@]}"
}
