"""The README and docs/ as a newcomer reads them: every command printed in a shell code block
or quoted inline in the prose exists (a `pipelines` subcommand and its options, a Makefile
target, a DVC command and the stage it names), every relative link resolves, and the README
stays short."""

from __future__ import annotations

import re
import shlex
from functools import cache
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MAX_README_LINES = 220
SHELL_FENCES = {"", "bash", "sh", "shell", "console"}
# DVC commands the docs may use, each with the subcommands it takes (None: no subcommand).
DVC_COMMANDS: dict[str, set[str] | None] = {
    "repro": None,
    "status": None,
    "push": None,
    "pull": None,
    "commit": None,
    "checkout": None,
    "dag": None,
    "exp": {"run", "show", "apply", "diff", "list", "remove", "branch", "save", "push", "pull"},
    "queue": {"start", "status", "stop", "kill", "logs", "remove"},
    "metrics": {"show", "diff"},
    "plots": {"show", "diff"},
    "params": {"diff"},
    "stage": {"list", "add"},
}
# Options of `dvc repro` / `dvc exp run` that take a value (the value is not a stage).
DVC_VALUED_OPTIONS = {
    *("-S", "--set-param", "-n", "--name", "-j", "--jobs", "-m", "--message"),
    *("-C", "--copy-paths"),
}


def doc_files() -> list[Path]:
    return [README, *sorted((REPO / "docs").glob("*.md"))]


def shell_commands(path: Path) -> list[tuple[int, str]]:
    """(line number, command line) for each command in the file's shell code blocks: a leading
    `$ ` stripped, continuation lines joined."""
    commands: list[tuple[int, str]] = []
    fence: str | None = None
    pending: tuple[int, str] | None = None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            fence = stripped[3:].strip().lower() if fence is None else None
            continue
        if fence not in SHELL_FENCES:
            continue
        if pending is not None:
            start, text = pending
            text += " " + stripped
        else:
            start, text = number, stripped.removeprefix("$ ")
        if text.endswith("\\"):
            pending = (start, text[:-1])
            continue
        pending = None
        commands.append((start, text))
    return commands


def simple_commands(line: str) -> list[list[str]]:
    """The words of each simple command on a shell line (split at `&&`, `||`, `;`, `|`, `&`),
    comments dropped, leading VAR=value assignments dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token and set(token) <= set("&|;"):
            commands.append([])
        else:
            commands[-1].append(token)
    out = []
    for words in commands:
        while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
            words = words[1:]
        if words:
            out.append(words)
    return out


def program(word: str) -> str:
    """`.venv/bin/pipelines` -> `pipelines`."""
    return word.rsplit("/", 1)[-1]


@cache
def cli_options() -> dict[str, set[str] | None]:
    """Every `pipelines` command path ("promote", "prefect-server start") with its options;
    a group maps to None."""
    import typer

    from pipelines.cli import app

    found: dict[str, set[str] | None] = {}

    def walk(command, prefix: str) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            path = f"{prefix} {name}".strip()
            if hasattr(sub, "commands"):
                found[path] = None
                walk(sub, path)
            else:
                opts = {o for p in sub.params for o in (*p.opts, *p.secondary_opts)}
                found[path] = {o for o in opts if o.startswith("-")} | {"--help"}

    walk(typer.main.get_command(app), "")
    return found


@cache
def make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, flags=re.M))


@cache
def dvc_stages() -> tuple[set[str], dict[str, set[str]]]:
    """Plain stage names, and each foreach stage's keys as params.yaml expands them."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    plain, foreach = set(), {}
    for name, stage in stages.items():
        if "foreach" not in stage:
            plain.add(name)
            continue
        items = stage["foreach"]
        if isinstance(items, str):
            match = re.fullmatch(r"\$\{(.+)\}", items.strip())
            assert match, f"dvc.yaml: stage {name}: foreach {items!r} not understood"
            items = params
            for key in match.group(1).split("."):
                items = items[key]
        foreach[name] = set(items)
    return plain, foreach


def is_placeholder(key: str) -> bool:
    return "<" in key or key == "..." or key.isupper()


def stage_problem(target: str) -> str | None:
    plain, foreach = dvc_stages()
    name, at, key = target.partition("@")
    if not at:
        if name in plain or name in foreach:
            return None
        return f"no stage {name!r} in dvc.yaml"
    if name not in foreach:
        return f"{name!r} is not a foreach stage in dvc.yaml"
    if key in foreach[name] or is_placeholder(key):
        return None
    return f"no key {key!r} for stage {name!r} (params.yaml has {sorted(foreach[name])})"


def pipelines_problems(args: list[str]) -> list[str]:
    commands = cli_options()
    words = [a for a in args if not a.startswith("-")]
    path = ""
    for word in words:
        candidate = f"{path} {word}".strip()
        if candidate not in commands:
            break
        path = candidate
        if commands[path] is not None:
            break
    if not path:
        if args in ([], ["--help"]):
            return []
        return [f"no pipelines subcommand {words[0] if words else args[0]!r}"]
    if commands[path] is None:
        return [f"pipelines {path}: a group; name one of its subcommands"]
    allowed = commands[path]
    return [
        f"pipelines {path}: no option {opt!r} (it has {sorted(allowed)})"
        for opt in (a.split("=", 1)[0] for a in args if a.startswith("-") and a != "-")
        if opt not in allowed
    ]


def dvc_problems(args: list[str]) -> list[str]:
    if not args or args[0].startswith("-"):
        return []
    command, rest = args[0], args[1:]
    if command not in DVC_COMMANDS:
        return [f"dvc {command}: not a DVC command these docs may use"]
    subcommands = DVC_COMMANDS[command]
    if subcommands is not None:
        if not rest or rest[0] not in subcommands:
            return [f"dvc {command}: unknown subcommand {rest[0] if rest else None!r}"]
        if command != "exp" or rest[0] != "run":
            return []
        rest = rest[1:]
    elif command != "repro":
        return []
    targets, skip, nested = [], False, 0
    for word in rest:
        if word == "(":
            nested += 1
        elif word == ")":
            nested -= 1
        elif nested or word == "$":  # a command substitution, `$(...)`: not DVC's words
            continue
        elif skip:
            skip = False
        elif word in DVC_VALUED_OPTIONS:
            skip = True
        elif not word.startswith("-"):
            targets.append(word)
    return [problem for target in targets if (problem := stage_problem(target))]


def make_problems(args: list[str]) -> list[str]:
    targets = [a for a in args if "=" not in a and not a.startswith("-")]
    return [f"make: no target {t!r} in the Makefile" for t in targets if t not in make_targets()]


def command_problems(words: list[str]) -> list[str]:
    prog = program(words[0])
    if prog == "pipelines":
        return pipelines_problems(words[1:])
    if prog.startswith("python") and words[1:3] == ["-m", "pipelines.cli"]:
        return pipelines_problems(words[3:])
    if prog == "dvc":
        return dvc_problems(words[1:])
    if prog == "make":
        return make_problems(words[1:])
    return []


def test_every_documented_command_exists():
    checked, failures = 0, []
    for path in doc_files():
        for number, line in shell_commands(path):
            try:
                commands = simple_commands(line)
            except ValueError as err:  # unbalanced quotes
                failures.append(f"{path.relative_to(REPO)}:{number}: {line!r}: {err}")
                continue
            for words in commands:
                problems = command_problems(words)
                checked += 1
                failures += [
                    f"{path.relative_to(REPO)}:{number}: {' '.join(words)!r}: {problem}"
                    for problem in problems
                ]
    assert not failures, "\n".join(failures)
    assert checked > 20, f"only {checked} commands found: is the code-block parser broken?"


INLINE_COMMAND = re.compile(r"`((?:pipelines|make|dvc) [^`]+)`")


def inline_commands(path: Path) -> list[tuple[int, str]]:
    """(line number, command) for each command quoted inline in the prose (outside code blocks):
    `pipelines promote NAME VERSION`, `make test`, `dvc exp run`."""
    found, fence = [], False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip().startswith("```"):
            fence = not fence
        elif not fence:
            # `<name>` stands for a value: NAME, as the code blocks write it.
            found += [
                (number, re.sub(r"<([\w-]+)>", lambda m: m.group(1).upper(), command))
                for command in INLINE_COMMAND.findall(line)
            ]
    return found


def test_every_command_quoted_in_the_prose_exists():
    checked, failures = 0, []
    for path in doc_files():
        for number, text in inline_commands(path):
            try:
                commands = simple_commands(text)
            except ValueError:  # a fragment, not a whole command line
                continue
            for words in commands:
                checked += 1
                failures += [
                    f"{path.relative_to(REPO)}:{number}: {text!r}: {problem}"
                    for problem in command_problems(words)
                ]
    assert not failures, "\n".join(failures)
    assert checked > 20, f"only {checked} inline commands found: is the parser broken?"


def test_the_checker_catches_bad_commands():
    assert command_problems(["pipelines", "draft-suite"])
    assert command_problems(["pipelines", "promote", "m", "1", "--without-comparison"]) == []
    assert command_problems(["pipelines", "prefect-server", "start"]) == []
    assert command_problems(["pipelines", "promot", "m", "1"])
    assert command_problems(["pipelines", "promote", "m", "1", "--no-such-option"])
    assert command_problems(["python", "-m", "pipelines.cli", "serve", "x", "--bogus=1"])
    assert command_problems(["make", "no-such-target"])
    assert command_problems(["dvc", "repro", "train@no-such-model"])
    assert command_problems(["dvc", "repro", "no-such-stage"])
    assert command_problems(["dvc", "reproduce"])
    assert command_problems(["dvc", "exp", "run", "-S", "a=1", "register@nope"])
    assert not command_problems(["dvc", "repro", "--single-item", "register@<name>"])
    assert not command_problems(["dvc", "exp", "run", "--queue", "-S", "models.x=1"])
    (substituted,) = simple_commands("dvc exp run --temp $(printf -- '-C %s ' m/*.json) -S a=1")
    assert not command_problems(substituted)
    assert command_problems([*substituted, "register@nope"])
    assert simple_commands("make ui  # then open it") == [["make", "ui"]]
    assert simple_commands("A=1 dvc queue start && dvc queue status") == [
        ["dvc", "queue", "start"],
        ["dvc", "queue", "status"],
    ]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, fence = set(), False
    for line in path.read_text().splitlines():
        if line.strip().startswith("```"):
            fence = not fence
        elif not fence and (match := re.match(r"#{1,6}\s+(.*)", line)):
            found.add(slug(match.group(1)))
    return found


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_readme_is_short_and_its_map_links_exist():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines (at most 220)"
    mapped = {
        target
        for line in lines
        for target in LINK.findall(line)
        if target.startswith("docs/") and target.endswith(".md")
    }
    assert mapped, "README.md links to no docs/ page"
    missing = sorted(t for t in mapped if not (REPO / t).is_file())
    assert not missing, f"README.md links to missing pages: {missing}"
    pages = {f"docs/{p.name}" for p in (REPO / "docs").glob("*.md")}
    assert not pages - mapped, f"docs/ pages the README's map leaves out: {sorted(pages - mapped)}"


def test_every_relative_link_resolves():
    failures = []
    for path in doc_files():
        fence = False
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip().startswith("```"):
                fence = not fence
            if fence:
                continue
            for target in LINK.findall(line):
                if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, mailto:, ...
                    continue
                file_part, _, anchor = target.partition("#")
                resolved = (path.parent / file_part).resolve() if file_part else path
                where = f"{path.relative_to(REPO)}:{number}: link {target!r}"
                if not resolved.exists():
                    failures.append(f"{where}: no such file")
                elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                    failures.append(f"{where}: no heading #{anchor}")
    assert not failures, "\n".join(failures)
