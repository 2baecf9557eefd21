"""README.md's shell blocks, run line by line exactly as written: the README is this test's input,
so the two cannot drift apart.

Every line of a ```sh (or bash, shell) block is run with bash, in order, in one fresh folder that
holds what a clone holds of `examples/`, with an emulator wired through its `BC_*` variables and
`bcbridge` on PATH; the folder and the exported variables carry from one line to the next, as in
a terminal. Each line must exit 0, or with N when its comment starts with `exits N`. The README
marks what is not run, always with a reason, the test lists no exceptions of its own:

- a line whose comment starts with `not run: REASON` (a placeholder, a command that runs until
  Ctrl-C, ...);
- a block opened as ```sh not run: REASON (GitHub still highlights it as sh).

Lines are shown as tests named `README.md:LINE command`, the ones not run as skipped with their
reason. A run line that follows a failed one still runs: the first failure is the one to read.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import typer

from bcbridge.testing import RunningEmulator, start_emulator

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SHELLS = {"sh", "bash", "shell"}
NOT_RUN = re.compile(r"not run:\s*(?P<reason>\S.*)")
EXITS = re.compile(r"exits (?P<code>\d+)\b")
FENCE = re.compile(r"^ {0,3}(?P<fence>```+|~~~+)\s*(?P<language>[^\s`]*)\s*(?P<rest>.*)$")
HEREDOC = re.compile(r"<<-?\s*(?P<quote>['\"]?)(?P<word>\w+)(?P=quote)")
TIMEOUT = 120  # seconds for one line: the machine may be busy


@dataclass
class Step:
    """One command line (with its continuation and here-document lines) of a shell block."""

    line: int  # 1-based, in README.md
    text: str
    exit_code: int = 0
    not_run: str | None = None  # the README's reason

    def __str__(self) -> str:
        first = self.text.splitlines()[0]
        return f"README.md:{self.line} {first[:70]}"


@dataclass
class Readme:
    steps: list[Step] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def comment_of(line: str) -> str | None:
    """The text of a shell comment ending `line` (a `#` starting a word outside quotes)."""
    quote = ""
    for index, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[index + 1 :].strip()
    return None


def parse(markdown: str) -> Readme:
    """The steps of the shell blocks of `markdown`, and what is malformed about them."""
    readme = Readme()
    lines = markdown.splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        index += 1
        if not opening:
            continue
        fence, language, rest = opening["fence"], opening["language"], opening["rest"]
        start = index
        while index < len(lines) and not lines[index].lstrip(" ").startswith(fence):
            index += 1
        body = lines[start:index]
        index += 1  # the closing fence
        if language not in SHELLS:
            readme.problems += [
                f"README.md:{start + n + 1}: a bcbridge command in a ```{language} block; "
                "use ```sh so that it is run (or mark it not run)"
                for n, text in enumerate(body)
                if text.strip().startswith(("bcbridge ", "$ bcbridge "))
            ]
            continue
        block_not_run = NOT_RUN.fullmatch(rest)
        if rest and not block_not_run:
            readme.problems.append(
                f"README.md:{start}: after ```{language} expected `not run: REASON`, got {rest!r}"
            )
        for step in _steps(body, first_line=start + 1, problems=readme.problems):
            if block_not_run:
                step.not_run = block_not_run["reason"]
            readme.steps.append(step)
    return readme


def _steps(body: list[str], first_line: int, problems: list[str]) -> Iterator[Step]:
    index = 0
    while index < len(body):
        line_number, text = first_line + index, body[index]
        index += 1
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        while text.endswith("\\") and index < len(body):
            text += "\n" + body[index]
            index += 1
        comment = comment_of(text.splitlines()[-1]) or ""  # a comment ends a command
        step = Step(line_number, text)
        heredoc = HEREDOC.search(text)
        if heredoc:
            while index < len(body) and body[index].strip() != heredoc["word"]:
                step.text += "\n" + body[index]
                index += 1
            if index == len(body):
                problems.append(f"README.md:{line_number}: no {heredoc['word']} ends the here-doc")
            else:
                step.text += "\n" + body[index]
                index += 1
        _marks(step, comment, problems)
        yield step


def _marks(step: Step, comment: str, problems: list[str]) -> None:
    if comment.startswith("not run"):
        not_run = NOT_RUN.match(comment)
        if not not_run:
            problems.append(f"README.md:{step.line}: `# not run:` needs a reason after the colon")
        step.not_run = not_run["reason"] if not_run else "no reason given"
    elif exits := EXITS.match(comment):
        step.exit_code = int(exits["code"])


README_STEPS = parse(README.read_text(encoding="utf-8"))


class Walk:
    """The folder, environment and results of the README walked so far (one per module)."""

    def __init__(self, folder: Path, emulator: RunningEmulator) -> None:
        self.folder = folder
        self.cwd = folder
        self.env = self._fresh_env(folder, emulator)
        self.results: dict[int, subprocess.CompletedProcess[str]] = {}
        self._copy_examples(folder)

    @staticmethod
    def _fresh_env(folder: Path, emulator: RunningEmulator) -> dict[str, str]:
        """A new user's environment: nothing of ours set but the emulator's BC_* variables."""
        bin_dir, home = folder.parent / "bin", folder.parent / "home"
        bin_dir.mkdir()
        home.mkdir()
        shim = bin_dir / "bcbridge"  # the interpreter under test, whatever is installed
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m bcbridge "$@"\n')
        shim.chmod(0o755)
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("BC_", "BCBRIDGE_", "XDG_"))
        }
        env.update(emulator.info.env())
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
        env["HOME"] = str(home)  # caches and state of the user, e.g. a token cache
        return env

    @staticmethod
    def _copy_examples(folder: Path) -> None:
        """`examples/` as a clone holds it: the files git tracks, none a local run left."""
        listed = subprocess.run(
            ["git", "ls-files", "-z", "examples"], cwd=ROOT, capture_output=True, text=True
        )
        names = [name for name in listed.stdout.split("\0") if name]
        if listed.returncode != 0 or not names:  # not a git checkout: the folder as it is
            names = [
                str(path.relative_to(ROOT))
                for path in (ROOT / "examples").rglob("*")
                if path.is_file() and not {".bcbridge", "out"} & set(path.parts)
            ]
        for name in names:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, folder / name)

    def result(self, wanted: Step) -> subprocess.CompletedProcess[str]:
        """Run the steps up to `wanted` that have not run yet; `wanted`'s result."""
        for step in README_STEPS.steps:
            if step.not_run is None and step.line not in self.results:
                self.results[step.line] = self._run(step)
            if step is wanted:
                break
        return self.results[wanted.line]

    def _run(self, step: Step) -> subprocess.CompletedProcess[str]:
        state = self.folder.parent / "state"
        script = (
            f"set -o pipefail\n{step.text}\n__status=$?\n"
            f'env -0 > "{state}.env"\npwd > "{state}.cwd"\nexit $__status\n'
        )
        try:
            done = subprocess.run(
                ["bash", "-c", script],
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
            )
        except subprocess.TimeoutExpired as timeout:
            return subprocess.CompletedProcess(
                step.text, -1, str(timeout.stdout or ""), f"timed out after {TIMEOUT} s"
            )
        env_file, cwd_file = Path(f"{state}.env"), Path(f"{state}.cwd")
        if env_file.exists():  # what the line exported (or cd'd to) holds for the next lines
            pairs = (item.partition("=") for item in env_file.read_text().split("\0") if item)
            self.env = {k: v for k, _, v in pairs if k not in ("_", "SHLVL", "OLDPWD")}
            self.cwd = Path(cwd_file.read_text().strip())
            env_file.unlink()
        return done


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Walk]:
    with start_emulator() as emulator:
        base = tmp_path_factory.mktemp("readme")
        folder = base / "clone"
        folder.mkdir()
        walked = Walk(folder, emulator)
        try:
            yield walked
        finally:
            _stop_a_detached_emulator(walked)


def _stop_a_detached_emulator(walk: Walk) -> None:
    """A README line may start an emulator in the background: stop it as a user would, with
    the walk's own HOME (where its record is), whether or not a later line did."""
    from bcbridge.cli import _register, app

    _register()
    emulator = typer.main.get_command(app).commands.get("emulator")  # type: ignore[attr-defined]
    if "stop" in getattr(emulator, "commands", {}):
        subprocess.run(
            ["bash", "-c", "bcbridge emulator stop"],
            cwd=walk.cwd,
            env=walk.env,
            capture_output=True,
            timeout=TIMEOUT,
        )


@pytest.mark.slow  # a process per line: ~1 s each on an idle machine
def test_the_readme_walk(walk: Walk) -> None:
    """Every line, in order, as one test: each line depends on the ones before it, so they run
    in one process (parallel workers would each replay the walk up to their line)."""
    for step in README_STEPS.steps:
        if step.not_run is not None:
            continue  # marked with its reason: `test_the_readme_shell_blocks_are_well_formed`
        done = walk.result(step)
        assert done.returncode == step.exit_code, (
            f"README.md:{step.line}: {step.text}\nexit code {done.returncode}, the README says "
            f"{step.exit_code}\n--- stdout\n{done.stdout[-3000:]}"
            f"\n--- stderr\n{done.stderr[-3000:]}"
        )
        assert "Traceback" not in done.stderr, f"README.md:{step.line}: {done.stderr}"


def test_the_readme_shell_blocks_are_well_formed() -> None:
    assert README_STEPS.problems == []
    run = [step for step in README_STEPS.steps if step.not_run is None]
    assert sum("bcbridge" in step.text for step in run) >= 10  # the parser found the walk


def test_every_command_is_in_the_readme() -> None:
    """Each command of `bcbridge` appears on a line of a shell block (run or marked not run)."""
    from bcbridge.cli import _register, app

    _register()
    text = "\n".join(step.text for step in README_STEPS.steps)
    missing = [
        " ".join(path)
        for path in _leaf_commands(typer.main.get_command(app), ())
        if not re.search(rf"(?<![\w/-])bcbridge\s+{re.escape(' '.join(path))}(?![\w-])", text)
    ]
    assert missing == [], (
        f"no README line shows: bcbridge {', bcbridge '.join(missing)}; add one to the README's "
        "'The CLI' walk (mark it `# not run: REASON` if it cannot run there)"
    )


def _leaf_commands(command: object, path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    children = getattr(command, "commands", {})
    if not children and path:
        yield path
    for name, child in sorted(children.items()):
        if not getattr(child, "hidden", False):
            yield from _leaf_commands(child, (*path, name))


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("```sh\nbcbridge a   # exits 3: why\n```", [("bcbridge a   # exits 3: why", 3, None)]),
        ("```sh\nbcbridge a  # not run: X\n```", [("bcbridge a  # not run: X", 0, "X")]),
        ("```sh not run: all\nbcbridge a\n```", [("bcbridge a", 0, "all")]),
        ("```sh\nbcbridge a '# not run: x'\n```", [("bcbridge a '# not run: x'", 0, None)]),
        ("```sh\ncat > f <<'EOF'\n# kept\nEOF\nbcbridge b \\\n  --c  # exits 2\n```",
         [("cat > f <<'EOF'\n# kept\nEOF", 0, None), ("bcbridge b \\\n  --c  # exits 2", 2, None)]),
        ("  ```sh\n  bcbridge a\n  ```", [("  bcbridge a", 0, None)]),  # indented, as in a list
        ("~~~sh\nbcbridge a\n~~~", [("bcbridge a", 0, None)]),
        ("```python\nbcbridge a\n```", []),
    ],
)  # fmt: skip
def test_the_parser_reads_the_marks(
    markdown: str, expected: list[tuple[str, int, str | None]]
) -> None:
    readme = parse(markdown)
    assert [(s.text, s.exit_code, s.not_run) for s in readme.steps] == expected
    assert bool(readme.problems) == markdown.startswith("```python")


@pytest.mark.parametrize(
    "markdown", ["```sh\nbcbridge a  # not run\n```", "```sh later\nbcbridge a\n```"]
)
def test_a_mark_without_a_reason_is_a_problem(markdown: str) -> None:
    assert parse(markdown).problems
