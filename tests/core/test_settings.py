"""What an operator may tune: five engine settings; the engine fixes the rest of its pacing.

A variable naming a setting the engine now fixes is refused by name, with
what to do about it, rather than silently ignored; the CLI says so in one
line.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from click.testing import CliRunner

from circleback import EngineTuning, Settings
from circleback.cli import cli
from circleback.core.errors import ConfigurationError


def test_the_engine_has_five_settings() -> None:
    assert [field.name for field in attrs.fields(EngineTuning)] == [
        "max_concurrent_checks",
        "check_timeout_seconds",
        "lease_seconds",
        "delivery_timeout_seconds",
        "shutdown_grace_seconds",
    ]


@pytest.mark.parametrize(
    ("variable", "knob"),
    [
        ("CIRCLEBACK_BATCH_SIZE", "batch_size"),
        ("CIRCLEBACK_MAX_SLEEP_SECONDS", "max_sleep_seconds"),
        ("CIRCLEBACK_TIMER_SLACK", "timer_slack_seconds"),
        ("CIRCLEBACK_DELIVERY_MAX_ATTEMPTS", "delivery_max_attempts"),
    ],
)
def test_a_variable_for_a_setting_the_engine_fixes_is_refused_by_name(
    variable: str, knob: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({variable: "5"})
    assert f"{variable}: {knob} is no longer a setting" in caught.value.message
    assert f"unset {variable}" in caught.value.message


@pytest.mark.parametrize("command", [["run", "--until-idle"], ["list"], ["db", "upgrade"]])
def test_the_cli_says_in_one_line_that_a_setting_is_gone(
    monkeypatch: Any, command: list[str]
) -> None:
    monkeypatch.setenv("CIRCLEBACK_RECORD_LINGER_SECONDS", "0.1")
    result = CliRunner().invoke(cli, ["--database-url", "sqlite://", *command])
    assert result.exit_code == 5
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.output.strip() == (
        "circleback: CIRCLEBACK_RECORD_LINGER_SECONDS: record_linger_seconds is no longer a "
        "setting (the engine fixes it); unset CIRCLEBACK_RECORD_LINGER_SECONDS"
    )
