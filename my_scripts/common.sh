# shellcheck shell=bash
# Shared logic of the GRPO run scripts (my_scripts/run_*.sh). Sourced, never run on its own.
#
# A run script sources this file (which sets the official AGGC run's settings), overrides the
# settings that differ, and calls `grpo_main "$@"`. All the logic lives here, once.
#
# Environment a user may set (anything else: pass Hydra overrides as arguments, they come last and win):
#   CLIP        global | aggc | aggc_official | aggc_lora | adagc | zclip    (default: aggc)
#   MODEL       HF hub id or local directory                            (default: the script's model)
#   N_GPUS      GPUs per node (trainer.n_gpus_per_node)                 (default: the script's)
#   NNODES      nodes in the Ray cluster (trainer.nnodes)               (default: 1)
#   SEED        data shuffling, actor mini-batch shuffling, vLLM sampling and FSDP init seeds (default: 42)
#   ATTN        flash_attention_2 (verl's default; needs the flash-attn package) | sdpa (PyTorch's own)
#                                                                        (default: flash_attention_2)
#   KEEP_CKPTS  checkpoints kept in OUT_DIR/checkpoints, oldest deleted first (0: keep all)  (default: 3)
#   DATA_DIR    train.parquet / test.parquet, made here when missing   (default: <repo>/data/<dataset>)
#   PROJECT     trainer.project_name                                    (default: aggc_rl_<task>)
#   EXPERIMENT  trainer.experiment_name              (default: <task>_<model>_<clip>_s<seed>)
#   OUT_DIR     run directory: train.log, metrics.jsonl, command.sh, hydra/, checkpoints/
#               (default: <repo>/outputs/<project>/<experiment>)
#   PYTHON      interpreter with aggc_rl installed                     (default: python3)
#   GSM8K_TRAIN_JSONL, GSM8K_TEST_JSONL   offline GSM8K source files (default: the Hugging Face hub)
#   WANDB_API_KEY  when set, wandb joins the console and file loggers
#   DRY_RUN=1      print the checks and the full command, start nothing, exit 0
#   PREPARE_ONLY=1 prepare the data (e.g. on a login node with internet) and exit
# Exit status: 2 for a bad setting, 1 for a missing prerequisite (GPUs, vLLM, flash-attn, data), else the
# trainer's.

# --- the official AGGC GRPO run (Qwen2.5-3B-Instruct on GSM8K, 4 GPUs); scripts override what differs ---
TASK=gsm8k                 # dataset: gsm8k | knights_knaves
DEFAULT_MODEL=Qwen/Qwen2.5-3B-Instruct
DEFAULT_N_GPUS=4
LR=1e-6
TRAIN_BATCH=512            # prompts per training step
MINI_BATCH=128             # prompts per PPO update (train batch / mini-batch = updates per step)
MICRO_BATCH=32             # sequences per GPU per forward/backward (gradient accumulation below that)
LOGPROB_MICRO_BATCH=32     # sequences per GPU for the old-policy and reference log-probs
ROLLOUT_N=5                # responses per prompt (the GRPO group)
KL_COEF=0.001              # KL loss (low_var_kl) against the reference policy; no KL in the reward
MAX_PROMPT=512
MAX_RESPONSE=1024
EPOCHS=15
TOTAL_STEPS=""             # empty: EPOCHS decide; a number caps the run (smoke tests)
VAL_MAX_SAMPLES=-1         # -1: the whole test split at every validation
OFFLOAD=true               # FSDP parameter and optimizer offload (actor), parameter offload (reference)
GPU_MEM_UTIL=0.6           # fraction of each GPU vLLM may take while generating
ROLLOUT_TP=1               # vLLM tensor parallel size
SAVE_FREQ=20
TEST_FREQ=5
# Knights and Knaves data (used when TASK=knights_knaves). The data seed is fixed on purpose: SEED
# changes the training run, never the puzzles, so arms with different seeds share DATA_DIR.
KK_PEOPLE=3-7
KK_TRAIN=5000
KK_TEST=500
KK_DATA_SEED=0

# Must match aggc_rl.clipping.RULE_NAMES (a test checks it); checked here so a typo fails in a second.
CLIP_METHODS="global aggc aggc_official aggc_lora adagc zclip"
# Attention implementations the scripts offer (transformers' names; verl's default first).
ATTN_CHOICES="flash_attention_2 sdpa"
FLASH_ATTN_INSTALL="pip install flash-attn --no-build-isolation (a build matching your torch and CUDA)"

REPO_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
SCRIPT_NAME=$(basename -- "$0")

say() { printf '[%s] %s\n' "$SCRIPT_NAME" "$*"; }
die_usage() {
	printf '[%s] error: %s\n' "$SCRIPT_NAME" "$*" >&2
	exit 2
}
die_missing() {
	printf '[%s] error: %s\n' "$SCRIPT_NAME" "$*" >&2
	exit 1
}

# The last non-blank line of a tool's output: the error itself, without its traceback.
last_line() { printf '%s\n' "$1" | grep -v '^[[:space:]]*$' | tail -n 1; }

is_uint() { case $1 in '' | *[!0-9]*) return 1 ;; *) return 0 ;; esac }

# Absolute path (the directory need not exist): Ray workers on other nodes do not share our cwd.
abspath() { case $1 in /*) printf '%s\n' "$1" ;; *) printf '%s/%s\n' "$PWD" "$1" ;; esac }

# Values go into Hydra overrides unquoted: a comma, space, quote, bracket, brace, '=' or '$' would be
# read as Hydra syntax (a comma even turns a path into a list), so refuse them with the reason.
hydra_safe() {
	case $2 in
	*[!A-Za-z0-9._/+@:~-]*) die_usage "$1='$2' has characters that Hydra would misread in an override; allowed: letters, digits and . _ - / + @ : ~" ;;
	esac
}

# --- settings from the environment ------------------------------------------------------------------------
resolve_settings() {
	CLIP=${CLIP:-aggc}
	case " $CLIP_METHODS " in
	*" $CLIP "*) ;;
	*) die_usage "CLIP='$CLIP' is invalid; allowed: ${CLIP_METHODS// /, }" ;;
	esac
	MODEL=${MODEL:-$DEFAULT_MODEL}
	# A local model directory given relatively must still resolve inside Ray workers.
	if [ -d "$MODEL" ]; then MODEL=$(cd -- "$MODEL" && pwd); fi
	N_GPUS=${N_GPUS:-$DEFAULT_N_GPUS}
	NNODES=${NNODES:-1}
	SEED=${SEED:-42}
	is_uint "$N_GPUS" && [ "$N_GPUS" -ge 1 ] || die_usage "N_GPUS='$N_GPUS' is invalid; allowed: a whole number >= 1 (GPUs per node)"
	is_uint "$NNODES" && [ "$NNODES" -ge 1 ] || die_usage "NNODES='$NNODES' is invalid; allowed: a whole number >= 1"
	is_uint "$SEED" || die_usage "SEED='$SEED' is invalid; allowed: a whole number >= 0"
	resolve_attn_and_keep
	case $TASK in
	gsm8k) default_data=$REPO_DIR/data/gsm8k ;;
	knights_knaves) default_data=$REPO_DIR/data/knights_knaves_${KK_PEOPLE}_seed$KK_DATA_SEED ;;
	*) die_usage "TASK='$TASK' (set by $SCRIPT_NAME) is invalid; allowed: gsm8k, knights_knaves" ;;
	esac
	DATA_DIR=$(abspath "${DATA_DIR:-$default_data}")
	model_tag=$(basename -- "$MODEL" | tr '[:upper:]' '[:lower:]')
	PROJECT=${PROJECT:-aggc_rl_$TASK}
	EXPERIMENT=${EXPERIMENT:-${TASK}_${model_tag}_${CLIP}_s$SEED}
	case $EXPERIMENT in */* | '') die_usage "EXPERIMENT='$EXPERIMENT' is invalid; allowed: a non-empty name without '/'" ;; esac
	OUT_DIR=$(abspath "${OUT_DIR:-$REPO_DIR/outputs/$PROJECT/$EXPERIMENT}")
	PYTHON=${PYTHON:-python3}
	hydra_safe MODEL "$MODEL"
	hydra_safe DATA_DIR "$DATA_DIR"
	hydra_safe OUT_DIR "$OUT_DIR"
	hydra_safe PROJECT "$PROJECT"
	hydra_safe EXPERIMENT "$EXPERIMENT"
	LOGGERS=console,file
	if [ -n "${WANDB_API_KEY:-}" ]; then LOGGERS=$LOGGERS,wandb; fi
}

# Shared with the SFT scripts: the attention implementation and the checkpoints kept.
resolve_attn_and_keep() {
	ATTN=${ATTN:-flash_attention_2}
	case " $ATTN_CHOICES " in
	*" $ATTN "*) ;;
	*) die_usage "ATTN='$ATTN' is invalid; allowed: ${ATTN_CHOICES// /, }" ;;
	esac
	KEEP_CKPTS=${KEEP_CKPTS:-3}
	is_uint "$KEEP_CKPTS" || die_usage "KEEP_CKPTS='$KEEP_CKPTS' is invalid; allowed: a whole number >= 0 (0: keep every checkpoint)"
	# verl's own spelling of "keep all" is null.
	if [ "$KEEP_CKPTS" -eq 0 ]; then KEEP_VALUE=null; else KEEP_VALUE=$KEEP_CKPTS; fi
}

# verl loads the reward function by file path; ask the interpreter that will run, so it is its aggc_rl.
reward_file() {
	"$PYTHON" -c 'import aggc_rl.rewards as r; print(r.__file__)' 2>/dev/null ||
		die_missing "PYTHON='$PYTHON' cannot import aggc_rl: install the project on every node (pip install -e '.[gpu]') or point PYTHON at the venv that has it"
}

# --- the Hydra overrides of the run, one per array element ----------------------------------------------
build_hydra_args() {
	HYDRA_ARGS=(
		algorithm.adv_estimator=grpo
		algorithm.use_kl_in_reward=false
		"data.train_files=$DATA_DIR/train.parquet"
		"data.val_files=$DATA_DIR/test.parquet"
		"data.train_batch_size=$TRAIN_BATCH"
		"data.max_prompt_length=$MAX_PROMPT"
		"data.max_response_length=$MAX_RESPONSE"
		data.filter_overlong_prompts=true
		data.truncation=error
		"data.val_max_samples=$VAL_MAX_SAMPLES"
		"data.seed=$SEED"
		"actor_rollout_ref.model.path=$MODEL"
		actor_rollout_ref.model.use_remove_padding=true
		actor_rollout_ref.model.enable_gradient_checkpointing=true
		# verl 0.9.1 builds the actor and the reference with flash_attention_2 unless told otherwise.
		"+actor_rollout_ref.model.override_config.attn_implementation=$ATTN"
		"actor_rollout_ref.actor.clip=$CLIP"
		"actor_rollout_ref.actor.optim.lr=$LR"
		"actor_rollout_ref.actor.ppo_mini_batch_size=$MINI_BATCH"
		"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=$MICRO_BATCH"
		actor_rollout_ref.actor.use_kl_loss=true
		"actor_rollout_ref.actor.kl_loss_coef=$KL_COEF"
		actor_rollout_ref.actor.kl_loss_type=low_var_kl
		actor_rollout_ref.actor.entropy_coeff=0
		"actor_rollout_ref.actor.data_loader_seed=$SEED"
		"actor_rollout_ref.actor.fsdp_config.seed=$SEED"
		"actor_rollout_ref.actor.fsdp_config.param_offload=$OFFLOAD"
		"actor_rollout_ref.actor.fsdp_config.optimizer_offload=$OFFLOAD"
		"actor_rollout_ref.ref.fsdp_config.param_offload=$OFFLOAD"
		"actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=$LOGPROB_MICRO_BATCH"
		actor_rollout_ref.rollout.name=vllm
		"actor_rollout_ref.rollout.n=$ROLLOUT_N"
		"actor_rollout_ref.rollout.tensor_model_parallel_size=$ROLLOUT_TP"
		"actor_rollout_ref.rollout.gpu_memory_utilization=$GPU_MEM_UTIL"
		"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=$LOGPROB_MICRO_BATCH"
		"actor_rollout_ref.rollout.seed=$SEED"
		"reward.custom_reward_function.path=$REWARD_FILE"
		reward.custom_reward_function.name=compute_score
		trainer.critic_warmup=0
		"trainer.logger=[$LOGGERS]"
		"trainer.project_name=$PROJECT"
		"trainer.experiment_name=$EXPERIMENT"
		"trainer.default_local_dir=$OUT_DIR/checkpoints"
		"trainer.n_gpus_per_node=$N_GPUS"
		"trainer.nnodes=$NNODES"
		"trainer.save_freq=$SAVE_FREQ"
		"trainer.max_actor_ckpt_to_keep=$KEEP_VALUE"
		"trainer.test_freq=$TEST_FREQ"
		"trainer.total_epochs=$EPOCHS"
		# verl's file logger runs inside a Ray actor: the path must reach it through the job's runtime env
		# (a cluster started with `ray start` does not inherit this shell's environment).
		"+ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH=$OUT_DIR/metrics.jsonl"
		# Hydra's own record of the composed config and overrides, inside the run directory.
		"hydra.run.dir=$OUT_DIR/hydra"
	)
	if [ -n "$TOTAL_STEPS" ]; then HYDRA_ARGS+=("trainer.total_training_steps=$TOTAL_STEPS"); fi
}

# --- data ------------------------------------------------------------------------------------------------
data_ready() { [ -s "$DATA_DIR/train.parquet" ] && [ -s "$DATA_DIR/test.parquet" ]; }

build_data_cmd() {
	case $TASK in
	gsm8k)
		DATA_CMD=("$PYTHON" -m aggc_rl.data.gsm8k --out "$DATA_DIR")
		if [ -n "${GSM8K_TRAIN_JSONL:-}" ]; then DATA_CMD+=(--train-jsonl "$GSM8K_TRAIN_JSONL"); fi
		if [ -n "${GSM8K_TEST_JSONL:-}" ]; then DATA_CMD+=(--test-jsonl "$GSM8K_TEST_JSONL"); fi
		;;
	knights_knaves)
		DATA_CMD=("$PYTHON" -m aggc_rl.data.knights_knaves --out "$DATA_DIR" --people "$KK_PEOPLE"
			--train "$KK_TRAIN" --test "$KK_TEST" --seed "$KK_DATA_SEED")
		;;
	esac
}

prepare_data() {
	if data_ready; then
		say "data: $DATA_DIR (train.parquet, test.parquet present)"
		return 0
	fi
	say "data: $DATA_DIR/train.parquet or test.parquet missing; preparing: ${DATA_CMD[*]}"
	if ! "${DATA_CMD[@]}"; then
		hint="check the message above"
		if [ "$TASK" = gsm8k ]; then
			hint="offline? set GSM8K_TRAIN_JSONL and GSM8K_TEST_JSONL (fields question, answer), or put train.parquet and test.parquet in DATA_DIR"
		fi
		die_missing "could not prepare the $TASK data in DATA_DIR=$DATA_DIR ($hint)"
	fi
	data_ready || die_missing "data preparation ran but DATA_DIR=$DATA_DIR still lacks train.parquet or test.parquet (a GSM8K split without its JSONL file?)"
}

# --- hardware and software checks --------------------------------------------------------------------------
visible_gpu_count() {
	# nvidia-smi lists every GPU of the node; CUDA_VISIBLE_DEVICES, when set, narrows what Ray will use.
	if ! listing=$(nvidia-smi --query-gpu=index --format=csv,noheader 2>&1); then
		die_missing "nvidia-smi failed ($(last_line "$listing")): is the NVIDIA driver working on this node?"
	fi
	count=$(printf '%s\n' "$listing" | grep -c '^[[:space:]]*[0-9]') || true
	if [ -n "${CUDA_VISIBLE_DEVICES+x}" ]; then
		visible=$(printf '%s' "$CUDA_VISIBLE_DEVICES" | tr ',' '\n' | grep -c '[0-9A-Za-z]') || true
		if [ "$visible" -lt "$count" ]; then count=$visible; fi
	fi
	printf '%s\n' "$count"
}

# NNODES=1: this node trains, so its own GPUs are counted. NNODES>1: the run is launched into a Ray cluster
# (from any node, a CPU-only head or login node too) and the cluster's GPUs are counted instead.
check_gpus() {
	if [ "$NNODES" -gt 1 ]; then
		check_ray_cluster
		return 0
	fi
	command -v nvidia-smi >/dev/null 2>&1 ||
		die_missing "nvidia-smi not found on PATH: this run needs N_GPUS=$N_GPUS NVIDIA GPU(s) per node (a GPU node with its driver); DRY_RUN=1 prints the command without GPUs"
	found=$(visible_gpu_count) || exit 1
	[ "$found" -ge "$N_GPUS" ] ||
		die_missing "found $found usable GPU(s) on this node (nvidia-smi, CUDA_VISIBLE_DEVICES='${CUDA_VISIBLE_DEVICES-unset}') but N_GPUS=$N_GPUS; set N_GPUS to at most $found (batch sizes must still divide) or use a bigger node"
	say "GPUs: $found usable on this node, N_GPUS=$N_GPUS"
}

# With NNODES > 1 the run joins the Ray cluster started with `ray start` (docs/cluster.md, Multi-node); count its GPUs now.
check_ray_cluster() {
	need=$((NNODES * N_GPUS))
	say "Ray: connecting to the running cluster (RAY_ADDRESS='${RAY_ADDRESS:-auto}') to count GPUs"
	have=$("$PYTHON" -c '
import os, sys
import ray
try:
    ray.init(address=os.environ.get("RAY_ADDRESS", "auto"), logging_level="ERROR", log_to_driver=False)
except Exception as err:
    print(f"none ({type(err).__name__}: {err})")
    sys.exit(0)
print(int(ray.cluster_resources().get("GPU", 0)))
' 2>/dev/null | tail -n 1) || have="none (the check itself failed: can $PYTHON import ray?)"
	case $have in
	none*) die_missing "NNODES=$NNODES needs a running Ray cluster with $need GPUs, found $have; start it first: 'ray start --head' on this node, 'ray start --address=<head-ip>:6379' on the others (docs/cluster.md, Multi-node)" ;;
	esac
	[ "$have" -ge "$need" ] ||
		die_missing "the Ray cluster has $have GPU(s) but NNODES=$NNODES x N_GPUS=$N_GPUS needs $need; join more nodes ('ray start --address=<head-ip>:6379') or lower NNODES"
	say "Ray: cluster has $have GPU(s), the run needs $need"
}

check_vllm() {
	if ! err=$("$PYTHON" -c 'import vllm' 2>&1 >/dev/null); then
		die_missing "vLLM is not importable by PYTHON='$PYTHON' ($(last_line "$err")); install the GPU extra on every node: pip install -e '.[gpu]'"
	fi
	say "vLLM: importable by $PYTHON"
}

flash_attn_note() {
	if "$PYTHON" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("flash_attn") is None)' >/dev/null 2>&1; then
		printf 'importable by %s\n' "$PYTHON"
	else
		printf 'NOT importable by %s here: a real start would stop; set ATTN=sdpa or %s\n' "$PYTHON" "$FLASH_ATTN_INSTALL"
	fi
}

# verl defaults to flash_attention_2, and verl[vllm] does not install flash-attn: refuse before Ray, not at
# model build in every worker. (python -m aggc_rl.train's preflight checks the composed config as well.)
check_attention() {
	if [ "$ATTN" != flash_attention_2 ]; then
		say "attention: ATTN=$ATTN (PyTorch's; no extra package)"
		return 0
	fi
	if ! err=$("$PYTHON" -c 'import flash_attn' 2>&1 >/dev/null); then
		die_missing "ATTN=flash_attention_2 (verl's default) needs the flash-attn package, which PYTHON='$PYTHON' cannot import ($(last_line "$err")); either install it on every node: $FLASH_ATTN_INSTALL, or run with ATTN=sdpa (PyTorch's attention, no extra package)"
	fi
	say "attention: ATTN=flash_attention_2 (flash_attn importable by $PYTHON)"
}

# wandb is not a dependency of verl's GPU extra: a set WANDB_API_KEY must not fail the run at its first log.
check_wandb() {
	[ -n "${WANDB_API_KEY:-}" ] || return 0
	if ! err=$("$PYTHON" -c 'import wandb' 2>&1 >/dev/null); then
		die_missing "WANDB_API_KEY is set but wandb is not importable by PYTHON='$PYTHON' ($(last_line "$err")): pip install wandb, or unset WANDB_API_KEY to log to console and file only"
	fi
	say "wandb: importable; logging to console, file and wandb"
}

# --- main --------------------------------------------------------------------------------------------------
print_dry_run() {
	say "DRY_RUN=1: nothing is checked, prepared or started; a real run would:"
	if [ "$NNODES" -gt 1 ]; then
		say "  check GPUs: the running Ray cluster has >= $((NNODES * N_GPUS)) GPUs (NNODES=$NNODES x N_GPUS=$N_GPUS; this node needs none)"
	else
		if command -v nvidia-smi >/dev/null 2>&1; then gpu_note="nvidia-smi is on PATH here"; else gpu_note="nvidia-smi is NOT on PATH here"; fi
		say "  check GPUs: nvidia-smi lists >= N_GPUS=$N_GPUS usable GPU(s) on this node ($gpu_note)"
	fi
	say "  check vLLM: $PYTHON -c 'import vllm' (else: pip install -e '.[gpu]')"
	if [ "$ATTN" = flash_attention_2 ]; then
		say "  check attention: ATTN=flash_attention_2 needs flash_attn: $(flash_attn_note)"
	else
		say "  check attention: ATTN=$ATTN needs no extra package"
	fi
	if [ -n "${WANDB_API_KEY:-}" ]; then say "  check wandb: $PYTHON -c 'import wandb' (WANDB_API_KEY is set)"; fi
	if data_ready; then
		say "  data: $DATA_DIR has train.parquet and test.parquet"
	else
		say "  data: $DATA_DIR lacks train.parquet/test.parquet; would run: ${DATA_CMD[*]}"
	fi
	say "  log to: console, $OUT_DIR/train.log, $OUT_DIR/metrics.jsonl (trainer.logger=[$LOGGERS])"
	if [ "$KEEP_CKPTS" -eq 0 ]; then keep_note="every one kept"; else keep_note="the last $KEEP_CKPTS kept"; fi
	say "  checkpoints: $OUT_DIR/checkpoints/global_step_N every $SAVE_FREQ steps, $keep_note (resumes from the latest when re-run)"
	echo "command:"
	printf '%q ' "${CMD[@]}"
	printf '\n'
	# Machine-readable: the Hydra arguments, one per line, between markers (tests compose them).
	echo "BEGIN_HYDRA_ARGS"
	printf '%s\n' "${CMD[@]:3}"
	echo "END_HYDRA_ARGS"
}

grpo_main() {
	set -o pipefail
	resolve_settings
	build_data_cmd
	if [ "${DRY_RUN:-0}" = 1 ]; then
		# Best effort in a dry run: the reward file as this interpreter would find it, else the repo's.
		REWARD_FILE=$("$PYTHON" -c 'import aggc_rl.rewards as r; print(r.__file__)' 2>/dev/null) ||
			REWARD_FILE=$REPO_DIR/aggc_rl/rewards/__init__.py
	elif [ "${PREPARE_ONLY:-0}" = 1 ]; then
		prepare_data
		say "PREPARE_ONLY=1: data ready in $DATA_DIR; nothing else done"
		return 0
	else
		REWARD_FILE=$(reward_file) || exit 1
	fi
	hydra_safe REWARD_FILE "$REWARD_FILE"
	build_hydra_args
	CMD=("$PYTHON" -m aggc_rl.train "${HYDRA_ARGS[@]}" "$@")
	if [ "${DRY_RUN:-0}" = 1 ]; then
		print_dry_run
		return 0
	fi

	check_gpus
	check_vllm
	check_attention
	check_wandb
	prepare_data
	mkdir -p "$OUT_DIR"
	# The exact command, re-runnable (and resumable: trainer.resume_mode=auto) by `sh command.sh`.
	{
		printf '%q ' "${CMD[@]}"
		printf '\n'
	} >"$OUT_DIR/command.sh"
	say "run directory: $OUT_DIR (checkpoints/, metrics.jsonl, train.log, command.sh)"
	say "starting: ${CMD[*]}"
	"${CMD[@]}" 2>&1 | tee -a "$OUT_DIR/train.log"
}
