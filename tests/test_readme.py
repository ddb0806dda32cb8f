"""Every example in README.md runs here, so the README cannot rot.

Each example runs in a fresh copy of a project laid out like this repository
(`spiders/`, `settings.toml`, plus the files the README shows), against the demo
catalogue served on loopback. The README's address for it, `127.0.0.1:8082`, is
replaced by the served one.

- ```python blocks starting with `# PATH` are files: written into the project before
  any example runs; a `tests/` file is imported and its `test_*` functions are called.
  Other ```python blocks are executed.
- ```pycon blocks are doctests (ELLIPSIS, NORMALIZE_WHITESPACE).
- ```sh blocks: each `scraper ...` command runs (CliRunner) and must exit 0, or the code
  given by a trailing `# exit N`. Commands that are not `scraper` commands, or must not
  run here, are listed in NOT_RUN with the reason.
- ```console blocks: `$ ` lines are commands as in ```sh; the lines after one are its
  output (stdout, then stderr), compared as a doctest would, `...` matching anything.
  After `$ scraper shell`, `>>> ` lines are typed into the shell, and its prompts are
  left out of the comparison.
- ```text blocks are illustrations and are not run.
"""

from __future__ import annotations

import doctest
import importlib.util
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import ROOT

from scraper.cli import main
from scraper.demo import build_site
from scraper.testing import Site, serve

README = ROOT / "README.md"
PLACEHOLDER = "127.0.0.1:8082"
LANGUAGES = {"python", "pycon", "sh", "console", "text"}
NOT_RUN = {
    "pip install": "installs the package: this suite runs inside that installation",
    "python -m pytest": "the README's test file's tests are called by test_example",
    "python bench/crawl_vs_reference.py": "needs the benchmark kit's nginx",
    "scraper demo --serve": "serves until interrupted: "
                            "test_commands.test_demo_serve_serves_until_interrupted runs it",
}
EXIT = re.compile(r"#\s*exit\s+(\d+)\s*$")
ENV = re.compile(r"^[A-Z_][A-Z0-9_]*=")
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@dataclass
class Block:
    lang: str
    text: str
    line: int

    @property
    def path(self) -> str | None:
        """The file a ```python block shows (`# spiders/catalogue.py`), if any."""
        first = self.text.splitlines()[0] if self.text else ""
        match = re.fullmatch(r"#\s*([\w./-]+\.\w+)\s*", first)
        return match.group(1) if self.lang == "python" and match else None


def read_blocks() -> list[Block]:
    blocks, lines = [], README.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        fence = re.fullmatch(r"```(\w*).*", lines[i])
        if fence:
            end = lines.index("```", i + 1)
            blocks.append(Block(fence.group(1), "\n".join(lines[i + 1:end]) + "\n", i + 1))
            i = end
        i += 1
    return blocks


BLOCKS = read_blocks()
RUNNABLE = [b for b in BLOCKS if b.lang != "text"
            and not (b.path and not b.path.startswith("tests/"))]


@dataclass
class Command:
    line: str
    args: list[str]
    env: dict[str, str]
    exit_code: int
    input: str | None = None
    expected: list[str] = field(default_factory=list)


def parse_command(text: str) -> Command | None:
    """A `scraper` command line; None for a listed NOT_RUN line (fails for others)."""
    match = EXIT.search(text)
    code = int(match.group(1)) if match else 0
    words = shlex.split(text, comments=True)
    env = {}
    while words and ENV.match(words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    plain = " ".join(words)
    if any(plain.startswith(prefix) for prefix in NOT_RUN):
        return None
    assert words[:1] == ["scraper"], f"not a scraper command, and not in NOT_RUN: {text!r}"
    return Command(text, words[1:], env, code)


def sh_commands(text: str) -> list[Command]:
    joined = text.replace("\\\n", " ")
    commands = []
    for line in joined.splitlines():
        for part in line.split(" && "):
            if part.strip() and not part.strip().startswith("#"):
                command = parse_command(part)
                if command:
                    commands.append(command)
    return commands


def console_commands(text: str) -> list[Command]:
    commands: list[Command] = []
    skipping = False
    for line in text.splitlines():
        if line.startswith("$ "):
            command = parse_command(line[2:])
            skipping = command is None
            if command:
                commands.append(command)
        elif not skipping:
            assert commands, f"output before any command: {line!r}"
            commands[-1].expected.append(line)
    for command in commands:
        if command.args[:1] == ["shell"]:
            typed = [line[4:] for line in command.expected if line.startswith(">>> ")]
            command.input = "\n".join(typed) + "\n" if typed else ""
            command.expected = [line for line in command.expected
                                if not line.startswith(">>> ")]
    return commands


def run_command(command: Command, port: int) -> None:
    args = [arg.replace(PLACEHOLDER, f"127.0.0.1:{port}") for arg in command.args]
    result = CliRunner().invoke(main, args, env=command.env, input=command.input,
                                prog_name="scraper")
    got = result.stdout + result.stderr
    if command.args[:1] == ["shell"]:
        got = result.stderr + result.stdout.replace(">>> ", "")
    got = got.replace(f"127.0.0.1:{port}", PLACEHOLDER)
    described = f"$ {command.line}\n--- exit code {result.exit_code}, output:\n{got}"
    if result.exception and not isinstance(result.exception, SystemExit):
        raise AssertionError(described) from result.exception
    assert result.exit_code == command.exit_code, described
    if command.expected:
        want = "\n".join(command.expected) + "\n"
        checker = doctest.OutputChecker()
        assert checker.check_output(want, got, FLAGS), \
            checker.output_difference(doctest.Example("", want), got, FLAGS)


def localised(block: Block, port: int) -> str:
    return block.text.replace(PLACEHOLDER, f"127.0.0.1:{port}")


@pytest.fixture(scope="module")
def site() -> Any:
    pages = {path: (200, {"Content-Type": "text/html; charset=utf-8"}, body)
             for path, body in build_site(300).items()}
    with serve(pages) as served:
        yield served


@pytest.fixture(scope="module")
def project(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's spiders and settings, plus every file the README shows."""
    root = tmp_path_factory.mktemp("readme-project")
    shutil.copytree(ROOT / "spiders", root / "spiders",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "settings.toml", root / "settings.toml")
    for block in BLOCKS:
        if block.path:
            target = root / block.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(localised(block, site.port), encoding="utf-8")
    return root


def test_every_example_is_understood() -> None:
    assert {block.lang for block in BLOCKS} <= LANGUAGES, "a fence language not handled here"
    assert any(b.path == "spiders/catalogue.py" for b in BLOCKS)
    shown = set()
    for block in BLOCKS:
        if block.lang == "sh":
            shown.update(c.args[0] for c in sh_commands(block.text))
        elif block.lang == "console":
            shown.update(c.args[0] for c in console_commands(block.text))
    assert shown >= {"crawl", "list", "fetch", "parse", "shell", "new", "settings", "demo"}
    assert any(b.lang == "pycon" and "scraper.crawl(" in b.text for b in BLOCKS)
    assert any(b.path and b.path.startswith("tests/") for b in BLOCKS)


@pytest.mark.parametrize("block", RUNNABLE, ids=[f"line{b.line}-{b.lang}" for b in RUNNABLE])
def test_example(block: Block, site: Site, project: Path, tmp_path: Path) -> None:
    shutil.copytree(project, tmp_path, dirs_exist_ok=True)  # the cwd of this test
    if block.path:
        spec = importlib.util.spec_from_file_location(f"readme_{block.line}",
                                                      tmp_path / block.path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        tests = [value for name, value in vars(module).items() if name.startswith("test_")]
        assert tests, f"{block.path} defines no test"
        for test in tests:
            test()
    elif block.lang == "python":
        exec(compile(localised(block, site.port), f"README.md:{block.line}", "exec"), {})
    elif block.lang == "pycon":
        parser, report = doctest.DocTestParser(), []
        test = parser.get_doctest(localised(block, site.port), {}, f"README.md:{block.line}",
                                  str(README), block.line)
        runner = doctest.DocTestRunner(optionflags=FLAGS)
        runner.run(test, out=report.append)
        assert runner.failures == 0, "".join(report)
    else:
        commands = sh_commands(block.text) if block.lang == "sh" \
            else console_commands(block.text)
        for command in commands:
            run_command(command, site.port)
