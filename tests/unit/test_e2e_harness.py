"""The e2e harness keeps its promises without a cluster (tests/e2e/conftest.py): a process it
starts never blocks on its own output, is always stopped (killed when it ignores SIGTERM), and
every wait says what it waited for. CI has no cluster, so these run here."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tests.e2e import conftest as harness


def test_a_process_writing_far_more_than_a_pipe_holds_never_blocks(tmp_path: Path) -> None:
    factory = harness.OperatorFactory(tmp_path)
    chatty = factory.spawn(
        [sys.executable, "-c", "import sys, time; sys.stdout.write('x' * 300_000 + '\\nend\\n'); "
         "sys.stdout.flush(); time.sleep(60)"]
    )  # fmt: skip
    try:
        harness.wait_for(lambda: "end" in chatty.output(), timeout=20, what="300 kB of output in the log")
        assert chatty.alive(), "it did not block (a 64 KiB pipe nobody reads would have stopped it)"
        assert chatty.tail(1) == "end"
    finally:
        factory.close()
    assert not chatty.alive()


def test_a_process_that_ignores_sigterm_is_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness, "STOP_GRACE", 0.5)
    factory = harness.OperatorFactory(tmp_path)
    stubborn = factory.spawn(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
         "print('ready', flush=True); time.sleep(60)"]
    )  # fmt: skip
    harness.wait_for(lambda: "ready" in stubborn.output(), timeout=20, what="the child to ignore SIGTERM")
    started = time.monotonic()
    factory.close()
    assert stubborn.proc.returncode == -9, "SIGKILL after the grace period"
    assert time.monotonic() - started < 5
    assert stubborn not in harness._RUNNING
    factory.close()  # idempotent


def test_every_wait_has_a_timeout_and_says_what_it_waited_for() -> None:
    assert harness.wait_for(lambda: "yes", timeout=1, what="x") == "yes"
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"timed out after 0 s waiting for the moon"):
        harness.wait_for(lambda: None, timeout=0.3, what="the moon", interval=0.1)
    assert time.monotonic() - started < 2


def test_a_subresource_is_asked_as_one() -> None:
    with pytest.raises(AssertionError, match="subresource="):
        harness.can("create", "pods/exec", "ns")


def test_objects_reach_kubectl_as_json() -> None:
    # YAML 1.1, which kubectl reads, makes an unquoted `n` a boolean; JSON keeps it a string.
    assert harness.manifest({"spec": {"nodeName": "n"}}) == '{"spec": {"nodeName": "n"}}'
