"""The `pipelines/` files each DVC stage runs, from the import graph (grimp's): the step modules
a stage runs and everything they import, plus files a stage uses without importing them.
dvc.yaml's `code` stage depends on all of them and writes each stage's list, with MD5s, to
`.stage-code/<stage>.md5` (`pipelines.orchestration.stage_code`, which reads the imports from
the source itself; tests/test_layout.py checks that both agree).

    python tools/stage_deps.py           # rewrite the `code` stage's deps (make deps)
    python tools/stage_deps.py --check   # exit 1 and name the differences

Only the `- pipelines/...` lines of the `code` stage's `deps` change; comments and everything
else in dvc.yaml stay as they are."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipelines.orchestration.stage_code import (  # noqa: E402
    CODE_STAGE,
    NAMESPACES,
    STORED_AS_CODE,
    module_file,
)
from pipelines.orchestration.stage_table import STAGES  # noqa: E402

# The modules each DVC stage runs: the stage table's.
STAGE_ROOTS = {stage.name: list(stage.modules) for stage in STAGES}
CODE_STAGE_MODULE = "pipelines.orchestration.stage_code"  # the `code` stage's own step


def expected_deps(stage_roots: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """Stage -> the sorted `pipelines/` files it depends on (each stage of the stage table's,
    or of `stage_roots`: stage -> its modules)."""
    import grimp

    graph = grimp.build_graph("pipelines", cache_dir=None)
    found = {}
    for stage, roots in (stage_roots or STAGE_ROOTS).items():
        modules = set(roots)
        for root in roots:
            modules |= graph.find_upstream_modules(root)
        files = {
            module_file(ROOT, m).relative_to(ROOT).as_posix()
            for m in modules
            if m not in NAMESPACES
        }
        found[stage] = sorted(files | set(STORED_AS_CODE.get(stage, ())))
    return found


def code_stage_deps() -> list[str]:
    """The `code` stage's deps: every file some stage runs, and its own step's files."""
    roots = {**STAGE_ROOTS, CODE_STAGE: [CODE_STAGE_MODULE]}
    return sorted({path for paths in expected_deps(roots).values() for path in paths})


def rewrite(text: str, deps: dict[str, list[str]]) -> str:
    """dvc.yaml's text with the `- pipelines/...` dep lines of each stage in `deps` replaced."""
    out, stage, lines = [], None, text.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        line = lines[i]
        named = re.match(r"^  ([\w-]+):\s*$", line)
        if named:
            stage = named.group(1)
        listed = re.match(r"^(\s+)- pipelines/", line)
        if listed and stage in deps:
            indent = listed.group(1)
            while i < len(lines) and re.match(r"^\s+- pipelines/", lines[i]):
                i += 1
            out += [f"{indent}- {path}\n" for path in deps[stage]]
            continue
        out.append(line)
        i += 1
    return "".join(out)


def main(argv: list[str]) -> int:
    dvc_yaml = ROOT / "dvc.yaml"
    text = dvc_yaml.read_text()
    new = rewrite(text, {CODE_STAGE: code_stage_deps()})
    if "--check" in argv:
        if new != text:
            print("dvc.yaml's `code` stage deps differ from the import graph: run `make deps`")
            return 1
        return 0
    if new != text:
        dvc_yaml.write_text(new)
        print("dvc.yaml: the `code` stage's deps rewritten from the import graph")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
