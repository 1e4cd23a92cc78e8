"""The ``cni-ipam`` command lines of the docs hold when followed literally.

For doc writers: every line of a code block (fenced, or indented with a
``$`` prompt) in README.md and docs/*.md that starts with ``cni-ipam``
(also after ``$ ``, ``sudo `` or ``.venv/bin/``) is parsed by cni-ipam's own
argument parser, so a renamed or removed flag fails this test.  What follows
a ``|``, ``>``, ``&&`` or ``#`` on the line is the shell's, not ours;
``[optional parts]`` of a synopsis are left out and ``<PLACEHOLDER>`` is a
word; in a block with ``$`` prompts only the prompted lines are commands
(the rest is their output).

A block directly after the line ``<!-- docs-check: run -->`` is also run,
in-process, in a scratch directory that holds ``network.yaml`` (the
``mixed`` example of tests/fixtures/deploy/) and where the standard flat
file names a SQLite store holding 192.0.2.2 and 192.0.2.3 (range
192.0.2.0/28, 192.0.2.1 excluded).  Each such command must exit 0, and
where the block shows JSON or YAML output after a ``$`` line, the printed
records must have the same fields.
"""

from __future__ import annotations

import json
import pathlib
import re
import shlex

import pytest
import yaml

from cni_ipam.cli import build_parser, main

ROOT = pathlib.Path(__file__).parent.parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN_MARK = "<!-- docs-check: run -->"
PREFIXES = ("$ ", "sudo ", ".venv/bin/")
SHELL_STOPS = {"|", "||", ">", ">>", "<", "&", "&&", ";", "2>", "2>&1"}


class Command:
    """One ``cni-ipam`` line of a doc: where it is, its arguments, and the output the doc shows after it."""

    def __init__(self, where: str, argv: list, shown: str, run: bool):
        self.where = where
        self.argv = argv
        self.shown = shown
        self.run = run


def code_blocks(text: str) -> list:
    """(first line number, lines, marked to run) of each fenced block, and of each indented block."""
    blocks, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        marked = i > 0 and lines[i - 1].strip() == RUN_MARK
        if lines[i].lstrip().startswith("```"):
            indent = len(lines[i]) - len(lines[i].lstrip())
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip().startswith("```"))
            blocks.append((i + 2, [line[indent:] for line in lines[i + 1:end]], marked))
            i = end + 1
        elif lines[i].startswith("    ") and (i == 0 or not lines[i - 1].strip() or marked):
            end = i
            while end < len(lines) and (lines[end].startswith("    ") or not lines[end].strip()):
                end += 1
            blocks.append((i + 1, [line[4:] for line in lines[i:end]], marked))
            i = end
        else:
            i += 1
    return blocks


def _words(line: str) -> list:
    """The shell words of ``line`` up to the first operator or comment (module docstring)."""
    line = re.sub(r"<([A-Za-z_-]+)>", r"\1", re.sub(r"\[[^\]]*\]", "", line))  # <DIR> is a placeholder
    lexer = shlex.shlex(line, posix=True, punctuation_chars="|&;<>")
    lexer.whitespace_split = True
    words = []
    for word in lexer:
        if word in SHELL_STOPS:
            break
        words.append(word)
    return words


def commands_in(path: pathlib.Path) -> list:
    found = []
    for first, lines, marked in code_blocks(path.read_text()):
        joined, starts = [], []
        for number, line in enumerate(lines, first):
            if joined and joined[-1].endswith("\\"):
                joined[-1] = joined[-1][:-1] + " " + line.strip()
            else:
                joined.append(line)
                starts.append(number)
        prompted = any(line.strip().startswith("$ ") for line in joined)
        for index, (number, line) in enumerate(zip(starts, joined)):
            text = line.strip()
            prompt = text.startswith("$ ")
            if prompted and not prompt:
                continue  # output the doc shows, not a command
            for prefix in PREFIXES:
                if text.startswith(prefix):
                    text = text[len(prefix):]
            if not text.startswith("cni-ipam "):
                continue
            shown = []
            if prompt:  # the output the doc shows: the lines up to the next prompt
                for later in joined[index + 1:]:
                    if later.strip().startswith("$ "):
                        break
                    shown.append(later)
            where = f"{path.relative_to(ROOT)}:{number}"
            found.append(Command(where, _words(text)[1:], "\n".join(shown).strip(), marked))
    return found


COMMANDS = [command for path in DOCS for command in commands_in(path)]


def test_the_docs_show_commands_and_some_are_run():
    assert len(COMMANDS) >= 20
    assert sum(command.run for command in COMMANDS) >= 3


@pytest.mark.parametrize("command", COMMANDS, ids=[c.where for c in COMMANDS])
def test_doc_command_line_parses(command):
    parser = build_parser()
    try:
        parser.parse_args(command.argv)
    except SystemExit as exc:  # --help and --version exit 0; a bad flag exits 2
        assert exc.code == 0, f"{command.where}: cni-ipam {' '.join(command.argv)}: refused by the parser"


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """The scratch directory of the module docstring."""
    from cni_ipam.cni.request import build_request
    from cni_ipam.plugins.whereabouts import PLUGIN

    add = PLUGIN.commands["ADD"]

    db = tmp_path / "store" / "whereabouts.db"
    flat = tmp_path / "whereabouts.conf"
    flat.write_text(json.dumps({"datastore": "sqlite", "sqlite_path": str(db)}))
    config = {"cniVersion": "1.0.0", "name": "net-a",
              "ipam": {"type": "whereabouts", "range": "192.0.2.0/28", "exclude": ["192.0.2.1/32"],
                       "configuration_path": str(flat)}}
    for i in range(2):
        env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": f"cid-{i}", "CNI_NETNS": f"/run/netns/p{i}",
               "CNI_IFNAME": "net1", "CNI_PATH": "/opt/cni/bin",
               "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=apps;K8S_POD_NAME=p{i}"}
        add(build_request(env, lambda: json.dumps(config).encode()))
    monkeypatch.setattr("cni_ipam.config.admin.FLAT_FILE_PATHS", (str(flat),))
    (tmp_path / "network.yaml").write_text((ROOT / "tests/fixtures/deploy/mixed.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _records(text: str):
    """The records of JSON or YAML output: a list as it is, one object as a list of one."""
    data = json.loads(text) if text.lstrip()[:1] in "[{" else yaml.safe_load(text)
    return data if isinstance(data, list) else [data]


RUN = [command for command in COMMANDS if command.run]


@pytest.mark.parametrize("command", RUN, ids=[c.where for c in RUN])
def test_doc_command_runs_as_shown(command, scratch, capsys):
    code = main(command.argv)
    out, err = capsys.readouterr()
    assert code == 0, f"{command.where}: cni-ipam {' '.join(command.argv)} exited {code}: {err}"
    if command.shown and ("-o" in command.argv or "--output" in command.argv):
        shown, printed = _records(command.shown), _records(out)
        assert printed, f"{command.where}: printed nothing"
        assert sorted(printed[0]) == sorted(shown[0]), f"{command.where}: the fields differ from the doc's"
