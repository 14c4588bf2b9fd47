"""README.md and docs/ stay true to the code: people copy their commands as they are written.

Every command line the pages show (code blocks and inline code) for an entry script or a
scripts/*.py script may only use flags that script's parser has, and every relative link, its
#anchor included, must lead somewhere. A flag table or a paragraph that names a script's flags
without the script's name is marked for it with ``<!-- flags: main.py -->`` on the line above.
"""

import argparse
import importlib
import json
import re
import shlex
from functools import lru_cache
from pathlib import Path
from typing import Dict, FrozenSet, Iterator, List, NamedTuple, Set, Tuple

import pytest
from helpers import ROOT, run_code

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SCRIPTS = ["main.py", "detect.py", "paramflops.py", "export.py", "predict.py"] + sorted(
    path.relative_to(ROOT).as_posix() for path in (ROOT / "scripts").glob("*.py")
)
FORWARDS_TO = {"scripts/slurm/train.sbatch": "main.py"}
"""Shell scripts whose extra arguments go to a Python script's parser."""
PASSES_ON = {"scripts/run_table.py": "main.py"}
"""Scripts whose arguments after `--` go to another script's parser."""
SOURCE_DIRS = ("models", "utils", "scripts", "tests", "docs", ".ci")
"""A path under one of these, shown in a page, names a file of the repository."""

FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```", re.S | re.M)
INLINE_CODE = re.compile(r"`([^`]+)`")
LINK = re.compile(r"!?\[([^\]]*)\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.M)
MARKER = re.compile(r"<!--\s*flags:\s*(\S+)\s*-->")
FLAG = re.compile(r"^(--?[A-Za-z][\w-]*)")
HELP_OPTION = re.compile(r"^  (-[^ ].*?)(?: {2,}|$)")
SHELL_SEPARATORS = re.compile(r"\s(?:\||;|&&|\|\|)\s")


def line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def without_code_blocks(text: str) -> str:
    """The page's prose: code blocks blanked out, keeping line numbers."""
    return FENCE.sub(lambda block: "\n" * block.group(0).count("\n"), text)


def shell_lines(block: str) -> Iterator[str]:
    """A code block's commands: continuation lines joined, comments and a `$ ` prompt dropped."""
    for line in block.replace("\\\n", " ").splitlines():
        line = re.sub(r"(^|\s)#.*", "", line).strip()
        yield line[2:] if line.startswith("$ ") else line


def words(command: str) -> List[str]:
    try:
        return shlex.split(command)
    except ValueError:  # an unbalanced quote in prose (run's) is still a list of words
        return command.split()


def script_flags(command: str) -> Iterator[Tuple[str, str]]:
    """(script, flag) for every flag after a script's name in a shell command line."""
    for part in SHELL_SEPARATORS.split(f" {command} "):
        tokens = words(part)
        for position, token in enumerate(tokens):
            script = FORWARDS_TO.get(token.removeprefix("./"), token.removeprefix("./"))
            if script in SCRIPTS:
                for argument in tokens[position + 1:]:
                    if argument == "--":
                        if script not in PASSES_ON:
                            break
                        script = PASSES_ON[script]
                    flag = FLAG.match(argument)
                    if flag:
                        yield script, flag.group(1)
                break


class ShownFlag(NamedTuple):
    script: str
    flag: str
    where: str
    kind: str


def shown_flags(page: Path) -> List[ShownFlag]:
    """Every flag the page shows for a script, with where it shows it."""
    text = page.read_text()
    shown = []
    for block in FENCE.finditer(text):
        if block.group(1).strip() == "python":
            continue
        where = f"{page.name}, code block at line {line_of(text, block.start(2))}"
        for command in shell_lines(block.group(2)):
            shown += [ShownFlag(script, flag, where, "code block") for script, flag in script_flags(command)]
    prose = without_code_blocks(text)
    for span in INLINE_CODE.finditer(prose):
        where = f"{page.name}:{line_of(prose, span.start())}"
        shown += [ShownFlag(script, flag, where, "inline code") for script, flag in script_flags(" ".join(span.group(1).split()))]
    for marker in MARKER.finditer(prose):
        where = f"{page.name}, the flags marked at line {line_of(prose, marker.start())}"
        paragraph = prose[marker.end():].lstrip("\n").split("\n\n", 1)[0]
        for span in INLINE_CODE.findall(paragraph):
            for token in span.replace(",", " ").split():
                flag = FLAG.match(token)
                if flag:
                    shown.append(ShownFlag(marker.group(1), flag.group(1), where, "marked"))
    return shown


def unknown_flags(page: Path, options: Dict[str, FrozenSet[str]]) -> List[str]:
    return [
        f"{shown.where}: {shown.script} has no {shown.flag}" if shown.script in options else f"{shown.where}: no script {shown.script}"
        for shown in shown_flags(page)
        if shown.flag not in options.get(shown.script, ())
    ]


def options_in_help(help_text: str) -> FrozenSet[str]:
    """The option strings of argparse's help: `  -a ARCH, --arch ARCH  help` gives -a and --arch."""
    options = set()
    for line in help_text.splitlines():
        invocation = HELP_OPTION.match(line)
        if invocation:
            options.update(item.split()[0] for item in invocation.group(1).split(", ") if item.startswith("-"))
    return frozenset(options)


def builder_options(script: str) -> FrozenSet[str]:
    """The options of a script's get_args_parser(), its parser built in this process."""
    module = importlib.import_module(script.removesuffix(".py").replace("/", "."))
    return frozenset(option for action in module.get_args_parser()._actions for option in action.option_strings)


HELP_RUNNER = """
import contextlib, io, json, runpy, sys
helps = {}
for script in sys.argv[1:]:
    sys.argv, printed, status = [script, "--help"], io.StringIO(), 0
    with contextlib.redirect_stdout(printed):
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as stop:
            status = stop.code
    helps[script] = [status, printed.getvalue()]
print(json.dumps(helps))
"""
"""Runs each script as `python SCRIPT --help` would, in one process: torch is imported once, not once a script."""


def help_options(scripts: List[str]) -> Dict[str, FrozenSet[str]]:
    """The options of scripts that build their parser inline, from their --help, in one process apart from this one."""
    if not scripts:
        return {}
    result = run_code(HELP_RUNNER, *scripts)
    assert result.returncode == 0, result.stderr.strip()
    helps = json.loads(result.stdout)
    failed = [f"{script} --help exited with {status}" for script, (status, _) in helps.items() if status not in (0, None)]
    assert not failed, "; ".join(failed)
    return {script: options_in_help(text) for script, (_, text) in helps.items()}


@pytest.fixture(scope="module")
def options() -> Dict[str, FrozenSet[str]]:
    """The options of every script the pages show flags for: imported get_args_parser()s, else --help."""
    shown = sorted({flag.script for page in PAGES for flag in shown_flags(page)} & set(SCRIPTS))
    found = {script: builder_options(script) for script in shown if "def get_args_parser(" in (ROOT / script).read_text()}
    found.update(help_options([script for script in shown if script not in found]))
    return found


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text, lower case, punctuation dropped, spaces as hyphens."""
    text = LINK.sub(r"\1", heading).replace("`", "")
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


@lru_cache(maxsize=None)
def anchors(page: Path) -> FrozenSet[str]:
    seen: Dict[str, int] = {}
    slugs = set()
    for match in HEADING.finditer(without_code_blocks(page.read_text())):
        slug = github_slug(match.group(2))
        slugs.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return frozenset(slugs)


def broken_links(page: Path) -> List[str]:
    prose = INLINE_CODE.sub("", without_code_blocks(page.read_text()))
    broken = []
    for _, target in LINK.findall(prose):
        if re.match(r"^[a-z][\w+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {linked.name}")
    return broken


def missing_paths(page: Path) -> List[str]:
    """Repository paths a page names (in code) that do not exist, such as a module that moved."""
    text = page.read_text()
    tokens: Set[str] = set()
    for block in FENCE.finditer(text):
        if block.group(1).strip() != "python":
            for command in shell_lines(block.group(2)):
                tokens.update(words(command))
    for span in INLINE_CODE.findall(without_code_blocks(text)):
        tokens.update(span.split())
    return sorted(
        token for token in tokens
        if token.split("/")[0] in SOURCE_DIRS and "/" in token and not re.search(r"[*<>{}$]", token)
        and not (ROOT / token.rstrip(".,;:)")).exists()
    )


PAGE_IDS = [page.relative_to(ROOT).as_posix() for page in PAGES]


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_flag_shown_exists(page: Path, options: Dict[str, FrozenSet[str]]) -> None:
    unknown = unknown_flags(page, options)
    assert not unknown, "\n".join(unknown)


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_relative_link_resolves(page: Path) -> None:
    broken = broken_links(page)
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_repository_path_shown_exists(page: Path) -> None:
    missing = missing_paths(page)
    assert not missing, f"{page.relative_to(ROOT)} names files that do not exist: {missing}"


def test_the_checks_see_every_kind_of_command_and_link() -> None:
    """An empty harvest would pass anything: the pages' code blocks, inline code, marked tables and links are seen."""
    shown = [flag for page in PAGES for flag in shown_flags(page)]
    assert {flag.kind for flag in shown} == {"code block", "inline code", "marked"}
    assert {flag.script for flag in shown} >= {"main.py", "detect.py", "paramflops.py", "export.py", "predict.py", "scripts/benchmark.py"}
    assert sum(len(LINK.findall(without_code_blocks(page.read_text()))) for page in PAGES) > 20


def test_a_made_up_flag_link_or_path_is_caught(tmp_path: Path, options: Dict[str, FrozenSet[str]]) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# A page\n\n"
        "```bash\n"
        "torchrun --nproc_per_node 2 main.py -a eca_resnet18 \\\n"
        "    --made-up-flag 3 -b 4 DIR   # --in-a-comment\n"
        "python scripts/run_table.py sota DIR -- -b 128 --seeds 1; python main.py -e -- --not-an-option\n"
        "```\n\n"
        "Time it with `python scripts/benchmark.py --reference --bogus`; the loop is in `utils/detection_engine.py`.\n\n"
        "<!-- flags: detect.py -->\n"
        "| flag | meaning |\n|---|---|\n| `--lr-steps`, `--fake` | x |\n\n"
        "[a](nowhere.md), [b](#a-page), [c](#no-such-heading), [d](https://example.com)\n"
    )
    assert unknown_flags(page, options) == [
        "page.md, code block at line 4: main.py has no --made-up-flag",
        "page.md, code block at line 4: main.py has no --seeds",
        "page.md:9: scripts/benchmark.py has no --bogus",
        "page.md, the flags marked at line 11: detect.py has no --fake",
    ]
    assert broken_links(page) == ["nowhere.md: no such file", "#no-such-heading: no heading #no-such-heading in page.md"]
    assert missing_paths(page) == ["utils/detection_engine.py"]


@pytest.mark.parametrize("script", [script for script in SCRIPTS if "def get_args_parser(" in (ROOT / script).read_text()])
def test_help_renders(script: str) -> None:
    """`SCRIPT --help` prints: argparse formats every help string with %, so one stray % (a
    recipe's "80.86% top-1") is a traceback instead of the help."""
    module = importlib.import_module(script.removesuffix(".py").replace("/", "."))
    assert "--help" in module.get_args_parser().format_help()


def test_help_options_are_read_as_argparse_writes_them() -> None:
    """The --help reader against a parser whose options are known, wrapped help and choices included."""
    parser = argparse.ArgumentParser(prog="example.py")
    parser.add_argument("-a", "--arch", metavar="ARCH")
    parser.add_argument("--train-pipeline", choices=["fast", "pil"], help="a help text long enough to wrap " * 8)
    parser.add_argument("--dummy", nargs="?", metavar="N")
    parser.add_argument("data", nargs="?")
    assert options_in_help(parser.format_help()) == {"-h", "--help", "-a", "--arch", "--train-pipeline", "--dummy"}
