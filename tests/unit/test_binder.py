"""Binder (repo2docker) config: scripts parse, `start` hands over to Jupyter, pins cover labkit."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

BINDER = Path(__file__).resolve().parents[2] / "binder"
PYPROJECT = BINDER.parent / "pyproject.toml"


@pytest.mark.parametrize("script", ["postBuild", "start"])
def test_scripts_parse_and_are_executable(script):
    path = BINDER / script
    subprocess.run(["bash", "-n", str(path)], check=True)
    assert path.stat().st_mode & 0o111, f"{script} must be executable"
    assert path.read_text().startswith("#!/usr/bin/env bash")


def test_start_ends_by_handing_over_to_jupyter():
    lines = [l.strip() for l in (BINDER / "start").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert lines[-1] == 'exec "$@"'
    assert any("labkit infra up" in l for l in lines)


def test_no_dockerfile_in_binder():
    assert not (BINDER / "Dockerfile").exists()  # it would disable every other file


def test_apt_has_redis_and_a_java_runtime():
    packages = (BINDER / "apt.txt").read_text().split()
    assert "redis-server" in packages
    assert any(p.startswith("openjdk-") and "jre" in p for p in packages)


def pins() -> dict[str, str]:
    out = {}
    for line in (BINDER / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"not pinned: {line}"
            out[canonicalize_name(name)] = version
    return out


def test_requirements_pin_every_labkit_dependency():
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    pinned = pins()
    for spec in project["dependencies"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in pinned, f"{req.name} missing from binder/requirements.txt"
        assert req.specifier.contains(pinned[name], prereleases=True), f"{name}=={pinned[name]} violates {spec}"


def test_postbuild_installs_labkit_and_fetches_kafka():
    text = (BINDER / "postBuild").read_text()
    assert "pip install" in text and "-e ." in text
    assert "resolve_libs" in text
