"""The SDK's size as a newcomer meets it: public names and lines per module.

    .venv/bin/python bench/surface.py                  # this tree
    .venv/bin/python bench/surface.py --rev ede5157    # a commit, for before/after

Prints how many names `shotstamp.__all__` lists, how many modules a user can
import without a leading underscore (and how many of them define code
rather than re-export), and each module's line count (a module
is a file under sdk/shotstamp/, or a package's `__init__.py`).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tree(rev: str | None, workdir: Path) -> Path:
    if rev is None:
        return ROOT / "sdk"
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "sdk"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(workdir)], input=archive, check=True)
    return workdir / "sdk"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", help="a git revision instead of the working tree")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sdk = _tree(args.rev, Path(tmp))
        count = subprocess.run(
            [sys.executable, "-c", "import shotstamp; print(len(shotstamp.__all__))"],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONPATH": str(sdk)},
        ).stdout.strip()
        package = sdk / "shotstamp"
        modules = {p.stem: p for p in package.glob("*.py") if p.stem != "__init__"}
        modules |= {p.parent.name: p for p in package.glob("*/__init__.py")}
        public = sorted(n for n in modules if not n.startswith("_"))
        print(f"names in shotstamp.__all__: {count}")
        # A module with no def or class only re-exports (an old path kept working).
        defining = [
            n
            for n in public
            if re.search(r"^\s*(async def|def|class) ", modules[n].read_text(), re.M)
        ]
        print(f"public modules: {len(public)}, defining code: {len(defining)}", defining)
        print(f"{'module':<22}{'lines':>7}")
        lines = {n: len(p.read_text(encoding="utf-8").splitlines()) for n, p in modules.items()}
        lines["__init__"] = len((package / "__init__.py").read_text(encoding="utf-8").splitlines())
        for name in sorted(lines, key=lambda n: (-lines[n], n)):
            print(f"{name:<22}{lines[name]:>7}")
        print(f"{'total':<22}{sum(lines.values()):>7}")


if __name__ == "__main__":
    main()
