"""Run the my_scripts/ shell scripts in a sandbox: a PATH of plain tools only, a logging Python, fakes on demand.

* ``PATH`` holds symlinks to the few system tools the scripts use, so ``nvidia-smi`` is absent unless a test
  adds a fake one (a GPU machine running the tests gives the same results);
* ``PYTHON`` is a wrapper that records every call, then runs this interpreter: a test can prove that a
  dry run started nothing (no trainer, no data command, no vLLM import);
* fake ``vllm`` / ``ray`` packages go into a directory on ``PYTHONPATH`` only when a test asks for them.

The environment is built from scratch, so a developer's WANDB_API_KEY, CUDA_VISIBLE_DEVICES or DATA_DIR
never leaks into a test.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS_DIR = REPO_ROOT / "my_scripts"
RUN_SCRIPTS = (
    "run_qwen2.5-3b_gsm8k.sh",
    "run_llama3.2-3b_gsm8k.sh",
    "run_qwen2.5-3b_kk.sh",
    "run_qwen2.5-0.5b_gsm8k.sh",
)
TOOLS = (
    "bash",
    "sh",
    "env",
    "cat",
    "dirname",
    "basename",
    "tr",
    "grep",
    "tail",
    "head",
    "mkdir",
    "tee",
    "sort",
    "find",
)
BEGIN, END = "BEGIN_HYDRA_ARGS", "END_HYDRA_ARGS"


@dataclass
class Sandbox:
    root: Path
    bin: Path
    python: Path
    python_log: Path
    fakes: Path
    env: dict[str, str] = field(default_factory=dict)

    def python_calls(self) -> list[str]:
        return self.python_log.read_text().splitlines() if self.python_log.exists() else []

    def fake_nvidia_smi(self, gpus: int, fail: str | None = None) -> None:
        """An ``nvidia-smi`` printing one index per GPU (as ``--query-gpu=index --format=csv,noheader``)."""
        indices = " ".join(str(i) for i in range(gpus))
        body = (
            f"cat >&2 <<'EOF'\n{fail}\nEOF\nexit 9\n"
            if fail
            else f"printf '%s\\n' {indices}\n"
            if gpus
            else "exit 0\n"
        )
        script = self.bin / "nvidia-smi"
        script.write_text(f"#!/bin/sh\n{body}")
        script.chmod(0o755)

    def fake_package(self, name: str, source: str) -> None:
        """A package ``name`` whose ``__init__`` is ``source``, ahead of the real one on PYTHONPATH."""
        package = self.fakes / name
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text(source)
        self.env["PYTHONPATH"] = str(self.fakes)


def make_sandbox(root: Path) -> Sandbox:
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True)
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found, f"{tool} not found on this machine"
        (bin_dir / tool).symlink_to(found)
    python_log = root / "python_calls.log"
    python = root / "python"
    python.write_text(f'#!/bin/sh\nprintf \'%s\\n\' "$*" >> "{python_log}"\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    env = {
        "PATH": str(bin_dir),
        "HOME": str(root / "home"),
        "PYTHON": str(python),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",  # nothing in these tests may download; fail fast if something tries
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(root / "hf"),
        "DATA_DIR": str(root / "data"),
        "OUT_DIR": str(root / "out"),
    }
    return Sandbox(
        root=root, bin=bin_dir, python=python, python_log=python_log, fakes=root / "fakes", env=env
    )


#: How a script can be started: ``sh SCRIPT`` (dash here, as on Debian/Ubuntu), ``bash SCRIPT``, ``./SCRIPT``.
INTERPRETERS = ("sh", "bash", "direct")


def run(
    sandbox: Sandbox, script: str, *args: str, interpreter: str = "bash", **env: str | None
) -> subprocess.CompletedProcess:
    """``<interpreter> my_scripts/<script> args`` in the sandbox; ``env`` adds variables (None removes one)."""
    full_env = dict(sandbox.env)
    for key, value in env.items():
        if value is None:
            full_env.pop(key, None)
        else:
            full_env[key] = value
    if interpreter not in INTERPRETERS:
        raise ValueError(f"interpreter={interpreter!r}; allowed: {INTERPRETERS}")
    path = str(SCRIPTS_DIR / script)
    # The machine's own sh and bash (the sandbox PATH holds links to them), so `sh` is really dash here.
    command = [path] if interpreter == "direct" else [str(sandbox.bin / interpreter), path]
    return subprocess.run(
        [*command, *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def hydra_arg_blocks(stdout: str) -> list[list[str]]:
    """Every BEGIN_HYDRA_ARGS ... END_HYDRA_ARGS block of a dry run, one argument per line."""
    blocks, current = [], None
    for line in stdout.splitlines():
        if line == BEGIN:
            current = []
        elif line == END:
            blocks.append(current)
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def hydra_args(stdout: str) -> list[str]:
    blocks = hydra_arg_blocks(stdout)
    assert len(blocks) == 1, f"expected one block of Hydra arguments, got {len(blocks)}:\n{stdout[-3000:]}"
    return blocks[0]


def as_dict(args: list[str]) -> dict[str, str]:
    """key -> value; a key given twice keeps the last value, as Hydra does."""
    return dict(arg.lstrip("+").split("=", 1) for arg in args)
