#!/usr/bin/env bash
# Stability comparison: one run script, one seed, one data set, once per clipping arm (one after another),
# then the stability report from the runs' logs (python -m aggc_rl.report RUN_DIR... --out DIR).
#
#   ARMS="global aggc adagc" SCRIPT=run_qwen2.5-3b_gsm8k.sh ./my_scripts/compare_stability.sh [hydra overrides...]
#
# ARMS         clip methods to run, in order (default "global aggc"; allowed: global aggc aggc_official adagc zclip)
# SCRIPT       a run script in my_scripts/ or a path to one (default run_qwen2.5-3b_gsm8k.sh)
# SEED         shared by every arm (default 42)
# COMPARE_DIR  arm X runs in COMPARE_DIR/X as experiment <script>_X_s<SEED>; the report goes to COMPARE_DIR/report
#              (default <repo>/outputs/compare/<script>_s<SEED>)
# DRY_RUN=1    print every command (each run script's dry run, then the report command); start nothing.
# Everything else (MODEL, N_GPUS, NNODES, DATA_DIR, PYTHON, WANDB_API_KEY, ...) reaches every arm unchanged;
# DATA_DIR unset means each script's default, the same directory for every arm. Extra arguments go to
# every arm. An arm that fails after it started does not stop the others (a diverging baseline is a result);
# one that fails before starting (bad setting, no GPU/vLLM/data) stops the comparison. Exit 1 if any failed.
# `sh SCRIPT` (dash) ignores the #! line: as_bash.sh re-runs this script under bash, same arguments.
# shellcheck source-path=SCRIPTDIR source=as_bash.sh
. "$(dirname -- "$0")/as_bash.sh"
set -eu

NAME=compare_stability.sh
HERE=$(cd -- "$(dirname -- "$0")" && pwd)
REPO_DIR=$(cd -- "$HERE/.." && pwd)
ALLOWED_ARMS="global aggc aggc_official aggc_lora adagc zclip" # as CLIP_METHODS in common.sh
say() { printf '[%s] %s\n' "$NAME" "$*"; }
die_usage() {
	printf '[%s] error: %s\n' "$NAME" "$*" >&2
	exit 2
}

ARMS=${ARMS:-global aggc}
SCRIPT=${SCRIPT:-run_qwen2.5-3b_gsm8k.sh}
SEED=${SEED:-42}
PYTHON=${PYTHON:-python3}
DRY_RUN=${DRY_RUN:-0}

case $SCRIPT in
*/*) script_path=$SCRIPT ;;
*) script_path=$HERE/$SCRIPT ;;
esac
if [ ! -f "$script_path" ]; then
	choices=$(cd "$HERE" && printf '%s ' run_*.sh)
	die_usage "SCRIPT='$SCRIPT' not found; allowed: one of $choices(in $HERE) or a path to a run script"
fi
[ -x "$script_path" ] || die_usage "SCRIPT='$script_path' is not executable (chmod +x it)"
stem=$(basename -- "$script_path" .sh)
stem=${stem#run_}
case $SEED in '' | *[!0-9]*) die_usage "SEED='$SEED' is invalid; allowed: a whole number >= 0" ;; esac

seen=" "
for arm in $ARMS; do
	case " $ALLOWED_ARMS " in
	*" $arm "*) ;;
	*) die_usage "ARMS contains '$arm'; allowed: ${ALLOWED_ARMS// /, }" ;;
	esac
	case $seen in *" $arm "*) die_usage "ARMS lists '$arm' twice; each arm runs once" ;; esac
	seen="$seen$arm "
done
[ "$seen" != " " ] || die_usage "ARMS is empty; allowed: a list of ${ALLOWED_ARMS// /, }"
if [ -n "${CLIP:-}${OUT_DIR:-}${EXPERIMENT:-}" ]; then
	say "note: CLIP, OUT_DIR and EXPERIMENT from the environment are ignored: each arm sets its own"
fi

COMPARE_DIR=${COMPARE_DIR:-$REPO_DIR/outputs/compare/${stem}_s$SEED}
case $COMPARE_DIR in /*) ;; *) COMPARE_DIR=$PWD/$COMPARE_DIR ;; esac

run_dirs=()
failed=""
for arm in $ARMS; do
	out=$COMPARE_DIR/$arm
	say "arm $arm: $script_path with CLIP=$arm SEED=$SEED OUT_DIR=$out"
	experiment=${stem}_${arm}_s$SEED
	status=0
	CLIP=$arm SEED=$SEED OUT_DIR=$out EXPERIMENT=$experiment DRY_RUN=$DRY_RUN "$script_path" "$@" || status=$?
	if [ "$status" -ne 0 ]; then
		if [ ! -e "$out/train.log" ]; then
			say "arm $arm failed before training started (exit $status); the other arms would fail the same way: stopping"
			exit "$status"
		fi
		say "arm $arm failed (exit $status) after it started; its logs still go into the report"
		failed="$failed $arm"
	fi
	run_dirs+=("$out")
done

REPORT_CMD=("$PYTHON" -m aggc_rl.report "${run_dirs[@]}" --out "$COMPARE_DIR/report")
if [ "$DRY_RUN" = 1 ]; then
	say "DRY_RUN=1: after the arms, the report would be made with:"
	printf '%q ' "${REPORT_CMD[@]}"
	printf '\n'
	exit 0
fi
say "report: ${REPORT_CMD[*]}"
"${REPORT_CMD[@]}"
say "stability report in $COMPARE_DIR/report"
if [ -n "$failed" ]; then
	say "failed arm(s):$failed (see COMPARE_DIR/<arm>/train.log)"
	exit 1
fi
