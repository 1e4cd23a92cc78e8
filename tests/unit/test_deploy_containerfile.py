"""The Containerfile: a pinned base, no downloads but Debian's and PyPI's, and the binary the manifests run.

It cannot be built here (no container registry to pull the base from), so
these checks read it.
"""

import json
import pathlib
import re
import shlex
import tomllib

import yaml

from cni_ipam.deploy.manifests import Options, agent_objects, dhcp_objects, reconciler_objects
from cni_ipam.deploy.plain import installer_objects, plain_options

ROOT = pathlib.Path(__file__).parent.parent.parent
CONTAINERFILE = ROOT / "Containerfile"


def instructions() -> list:
    """(INSTRUCTION, arguments) in order, continuation lines joined and comments dropped."""
    lines, current = [], ""
    for line in CONTAINERFILE.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        lines.append(current + line)
        current = ""
    assert not current, "the Containerfile ends inside a continued line"
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in lines]


def only(name: str) -> str:
    found = [args for instruction, args in instructions() if instruction == name]
    assert len(found) == 1, f"expected one {name}, found {found}"
    return found[0]


def shell_commands(name="RUN") -> list:
    """Each RUN split into its simple commands (on && and ;), as word lists."""
    commands = []
    for instruction, args in instructions():
        if instruction == name:
            for part in re.split(r"&&|;", args):
                if part.strip():
                    commands.append(shlex.split(part))
    return commands


def test_the_base_is_pinned():
    base = only("FROM")
    assert " " not in base, "one stage, no 'AS' or options"
    name, _, digest = base.partition("@")
    registry_and_repo, _, tag = name.rpartition(":")
    assert "/" in registry_and_repo and tag, f"{base}: name the registry and a tag"
    assert tag != "latest" and not tag.startswith("stable") and re.search(r"\d{8}|\d+\.\d+", tag), \
        f"{base}: a dated or versioned tag, never one that moves"
    assert not digest or re.fullmatch(r"sha256:[0-9a-f]{64}", digest)


def test_only_debian_packages_and_the_local_project_are_installed():
    downloads = [c for c in shell_commands() if c[0] in ("curl", "wget", "git")]
    assert downloads == []
    assert all(instruction != "ADD" for instruction, _ in instructions())
    apt = [c for c in shell_commands() if c[:2] == ["apt-get", "install"]]
    assert len(apt) == 1 and {"python3", "python3-venv", "patchelf"} <= set(apt[0])
    pips = [c for c in shell_commands() if len(c) > 2 and c[0].endswith("/pip") and c[1] == "install"]
    assert pips, "the project is installed with pip"
    for command in pips:
        targets = [word for word in command[2:] if not word.startswith("-")]
        options = [word for word in command[2:] if word.startswith("-")]
        assert set(options) <= {"--no-cache-dir"}, f"{command}: no other index, no requirement files"
        for target in targets:
            assert target == "/build" or re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][A-Za-z0-9.]*", target), \
                f"{command}: {target} is neither the local project nor pinned"


def test_the_local_project_is_what_is_copied():
    copies = [shlex.split(args) for instruction, args in instructions() if instruction == "COPY"]
    for *sources, _ in copies:
        for source in sources:
            assert (ROOT / source).exists(), source
    assert ["src", "/build/src"] in copies


def test_the_projects_dependencies_come_from_pypi():
    """pip resolves them by name from PyPI: no URL, path or VCS requirement."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    requirements = project["project"]["dependencies"] + project["build-system"]["requires"]
    for requirement in requirements:
        assert re.fullmatch(r"[A-Za-z0-9_.-]+(\[[a-z,]+\])?\s*([<>=!~]=?[0-9][0-9.]*,?\s*)*", requirement), requirement


def test_cni_ipam_is_the_entrypoint_on_path():
    entrypoint = json.loads(only("ENTRYPOINT"))
    assert entrypoint == ["cni-ipam"]
    venv = next(c[-1] for c in shell_commands() if c[:3] == ["python3", "-m", "venv"])
    path = only("ENV")
    assert path.startswith(f"PATH={venv}/bin:")


def every_container(objects):
    for doc in objects:
        if doc["kind"] == "DaemonSet":
            pod = doc["spec"]["template"]["spec"]
            yield from pod.get("initContainers", []) + pod["containers"]


def test_every_manifest_runs_the_entrypoints_binary():
    entrypoint = json.loads(only("ENTRYPOINT"))[0]
    options = Options()
    objects = dhcp_objects(options) + reconciler_objects(options) + agent_objects(options)
    objects += installer_objects(plain_options())
    for path in (ROOT / "deploy").rglob("*.yaml"):
        objects += [d for d in yaml.safe_load_all(path.read_text()) if d]
    commands = [c["command"][0] for c in every_container(objects)]
    assert len(commands) > 8 and set(commands) == {entrypoint}
