"""The `labkit` command's surface: version, backend choices in --help, errors on stderr."""

from __future__ import annotations

from importlib.metadata import version

import pytest
from typer.testing import CliRunner

from labkit.cli import app
from labkit.settings import LANES

runner = CliRunner()
WIDE = {"COLUMNS": "200"}  # so rich's help table never wraps a choice list


def test_version_prints_the_installed_package_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"labkit {version('labkit')}"


@pytest.mark.parametrize("command", [["worker"], ["dlq", "list"], ["dlq", "redrive"]])
def test_one_lane_commands_list_the_lanes(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"], env=WIDE)
    assert result.exit_code == 0
    assert "|".join(LANES) in result.stdout


@pytest.mark.parametrize("command", [["publish"], ["stats"]])
def test_many_lane_commands_list_all_and_the_lanes(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"], env=WIDE)
    assert result.exit_code == 0
    assert "|".join(("all", *LANES)) in result.stdout


def test_an_unknown_lane_is_refused_before_any_broker_is_asked() -> None:
    result = runner.invoke(app, ["stats", "--backend", "rabbitmq"])
    assert result.exit_code == 2
    assert "rabbitmq" in result.stderr and result.stdout == ""


@pytest.mark.parametrize(("variable", "value"), [("LABKIT_TIME_SCALE", "fast"), ("LABKIT_KAFKA_ORDERING", "random")])
def test_a_bad_setting_is_one_error_line_on_stderr(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    result = runner.invoke(app, ["stats", "--json"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.strip().startswith(f"error: {variable}='{value}'")


def test_the_worker_names_the_kafka_orderings() -> None:
    result = runner.invoke(app, ["worker", "--help"], env=WIDE)
    assert result.exit_code == 0
    assert "partition|key|unordered" in result.stdout


def test_an_unknown_ordering_is_refused_before_any_broker_is_asked() -> None:
    result = runner.invoke(app, ["worker", "--backend", "kafka", "--ordering", "random"])
    assert result.exit_code == 2
    assert "random" in result.stderr and result.stdout == ""

