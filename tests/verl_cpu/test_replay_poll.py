"""The CPU backend's replay-buffer poll: verl's default of 2 s becomes 0.05 s, a caller's value is kept."""

from __future__ import annotations

import sys
import types

import pytest

from verl_cpu import replay_poll


def fake_module() -> types.ModuleType:
    module = types.ModuleType("fake_replay_buffer")

    class ReplayBuffer:
        def __init__(self, trainer_mode: str, poll_interval: float = 2.0) -> None:
            self.trainer_mode = trainer_mode
            self.poll_interval = poll_interval

    class ReplayBufferAsync(ReplayBuffer):
        pass

    module.ReplayBuffer, module.ReplayBufferAsync = ReplayBuffer, ReplayBufferAsync
    return module


def test_the_default_poll_becomes_short_and_a_given_one_is_kept(monkeypatch):
    monkeypatch.delenv(replay_poll.POLL_ENV, raising=False)
    module = fake_module()
    replay_poll.patch_replay_buffer(module)
    replay_poll.patch_replay_buffer(module)  # idempotent: one wrapper
    assert module.ReplayBuffer("sync").poll_interval == replay_poll.POLL_INTERVAL_S == 0.05
    assert module.ReplayBufferAsync("async").poll_interval == 0.05  # subclasses inherit it
    assert module.ReplayBuffer("sync", poll_interval=1.5).poll_interval == 1.5
    assert getattr(module.ReplayBuffer.__init__, replay_poll.MARK)
    assert not getattr(module.ReplayBuffer.__init__.__wrapped__, replay_poll.MARK, False)


def test_the_environment_sets_another_poll_and_a_bad_one_is_refused(monkeypatch):
    monkeypatch.setenv(replay_poll.POLL_ENV, "2.0")
    module = fake_module()
    replay_poll.patch_replay_buffer(module)
    assert module.ReplayBuffer("sync").poll_interval == 2.0
    for bad in ("0", "-1", "nan", "soon"):
        monkeypatch.setenv(replay_poll.POLL_ENV, bad)
        with pytest.raises(ValueError, match=f"AGGC_RL_REPLAY_POLL_S='{bad}': allowed is a positive number"):
            replay_poll.install()


def test_verls_replay_buffer_is_patched_on_the_cpu_platform(monkeypatch):
    """Installed as the CPU plugin installs it: verl's real replay buffer then defaults to the short poll."""
    import inspect

    monkeypatch.delenv(replay_poll.POLL_ENV, raising=False)
    replay_poll.install()
    module = sys.modules.get(replay_poll.REPLAY_BUFFER_MODULE) or __import__(
        replay_poll.REPLAY_BUFFER_MODULE, fromlist=["ReplayBuffer"]
    )
    init = module.ReplayBuffer.__init__
    assert getattr(init, replay_poll.MARK, False)
    assert inspect.signature(init.__wrapped__).parameters["poll_interval"].default == 2.0  # verl's, untouched
