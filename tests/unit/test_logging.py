"""Logs: JSON lines off a terminal, carrying organization and namespace; Kopf's too."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from tenantry.observe.logging import configure, get_logger


@pytest.fixture(autouse=True)
def _reset_logging() -> object:
    yield
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


def test_json_lines_carry_organization_and_namespace(capsys: pytest.CaptureFixture[str]) -> None:
    configure("INFO", json_logs=True)
    get_logger("tenantry.test").warning("drift corrected", organization="acme", namespace="acme-prod")
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["event"] == "drift corrected"
    assert line["organization"] == "acme" and line["namespace"] == "acme-prod"
    assert line["level"] == "warning" and "timestamp" in line


def test_stdlib_logs_from_kopf_share_the_json_format(capsys: pytest.CaptureFixture[str]) -> None:
    configure("INFO", json_logs=True)
    logging.getLogger("kopf.objects").info("Handler succeeded.")
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["event"] == "Handler succeeded." and line["logger"] == "kopf.objects"


def test_console_format_on_a_terminal_is_not_json(capsys: pytest.CaptureFixture[str]) -> None:
    configure("INFO", json_logs=False)
    get_logger("tenantry.test").info("started", organization="acme")
    text = capsys.readouterr().err
    assert "started" in text and "organization" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.strip().splitlines()[-1])
