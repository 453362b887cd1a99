"""Every script in my_scripts/ behaves the same started as ``sh SCRIPT`` (dash here), ``bash SCRIPT`` or ``./SCRIPT``.

The official AGGC README starts its GRPO run with ``sh``; on Debian and Ubuntu that is dash, which ignores the
``#!`` line. The scripts re-run themselves under bash; these tests prove that the output and the exit code do
not depend on how a script was started, for a dry run and for refused settings.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from script_sandbox import INTERPRETERS, RUN_SCRIPTS, SCRIPTS_DIR, Sandbox, make_sandbox, run

ALL_SCRIPTS = (
    *RUN_SCRIPTS,
    "run_lora_aggc_mistral-7b_metamath.sh",
    "run_lora_aggc_llama2-7b_metamath.sh",
    "compare_stability.sh",
    "merge_ckpt/merge.sh",
)


def test_sh_on_this_machine_is_not_bash():
    """Otherwise the tests below would not test anything: /bin/sh must be a POSIX shell such as dash."""
    sh = os.path.realpath(shutil.which("sh") or "/bin/sh")
    assert os.path.basename(sh) != "bash", f"/bin/sh is {sh}; these tests need dash (or another non-bash sh)"


@pytest.fixture
def sandbox(tmp_path) -> Sandbox:
    box = make_sandbox(tmp_path)
    box.env["COMPARE_DIR"] = str(tmp_path / "cmp")
    return box


def outcomes(sandbox: Sandbox, script: str, *args: str, **env: str) -> dict[str, tuple[int, str, str]]:
    """(exit code, stdout, stderr) of the same call under each interpreter."""
    results = {}
    for interpreter in INTERPRETERS:
        out = run(sandbox, script, *args, interpreter=interpreter, **env)
        results[interpreter] = (out.returncode, out.stdout, out.stderr)
    return results


@pytest.mark.parametrize("script", RUN_SCRIPTS)
def test_dry_run_is_the_same_under_sh_bash_and_direct(sandbox, script):
    results = outcomes(sandbox, script, "trainer.val_before_train=false", DRY_RUN="1")
    code, stdout, _ = results["sh"]
    assert code == 0, results["sh"]
    assert "actor_rollout_ref.actor.clip=aggc" in stdout and "python" in stdout
    assert results["bash"] == results["sh"] == results["direct"]


def test_the_headline_command_under_sh_switches_with_clip(sandbox):
    out = run(sandbox, "run_qwen2.5-3b_gsm8k.sh", interpreter="sh", DRY_RUN="1", CLIP="global")
    assert out.returncode == 0, out.stderr
    assert "actor_rollout_ref.actor.clip=global" in out.stdout
    assert "actor_rollout_ref.actor.clip=aggc" not in out.stdout


@pytest.mark.parametrize("script", RUN_SCRIPTS)
def test_a_bad_setting_exits_2_under_every_interpreter(sandbox, script):
    results = outcomes(sandbox, script, DRY_RUN="1", CLIP="bogus")
    for interpreter, (code, _, stderr) in results.items():
        assert code == 2, (interpreter, stderr)
        assert "CLIP='bogus' is invalid; allowed: global, aggc" in stderr, interpreter
    assert results["bash"] == results["sh"] == results["direct"]


def test_compare_stability_dry_run_under_sh(sandbox):
    env = {"DRY_RUN": "1", "ARMS": "global aggc", "SCRIPT": "run_qwen2.5-0.5b_gsm8k.sh"}
    results = outcomes(sandbox, "compare_stability.sh", **env)
    assert results["sh"][0] == 0, results["sh"]
    assert "aggc_rl.report" in results["sh"][1]
    assert results["bash"] == results["sh"] == results["direct"]
    bad = outcomes(sandbox, "compare_stability.sh", DRY_RUN="1", ARMS="global bogus")
    assert {code for code, _, _ in bad.values()} == {2}


def test_merge_usage_error_under_sh(sandbox, tmp_path):
    results = outcomes(sandbox, "merge_ckpt/merge.sh")
    assert {code for code, _, _ in results.values()} == {2}
    assert "usage: merge.sh" in results["sh"][2]
    missing = outcomes(sandbox, "merge_ckpt/merge.sh", str(tmp_path / "nope"))
    assert {code for code, _, _ in missing.values()} == {1}
    assert results["bash"] == results["sh"] == results["direct"]


@pytest.mark.parametrize("script", ALL_SCRIPTS)
def test_without_bash_sh_says_so_and_exits_1(tmp_path, script):
    """On a machine without bash, ``sh SCRIPT`` stops at once with a message, not a dash syntax error."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # A machine with a POSIX shell and coreutils, but no bash.
    (bin_dir / "sh").symlink_to(os.path.realpath(shutil.which("sh") or "/bin/sh"))
    (bin_dir / "dirname").symlink_to(shutil.which("dirname"))
    out = subprocess.run(
        [str(bin_dir / "sh"), str(SCRIPTS_DIR / script)],
        env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 1, out
    assert f"[{Path(script).name}] error: this script needs bash, which is not on PATH" in out.stderr
    assert "Syntax error" not in out.stderr and "Bad substitution" not in out.stderr
