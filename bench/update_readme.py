"""Copy the benchmarks' summary tables into README.md: ``python bench/update_readme.py``.

The README's "Benchmarks" section holds, between ``<!-- bench:NAME -->`` and
``<!-- /bench:NAME -->`` markers, the "## Summary" section (and for ``glm`` the
cross-validated path's table) of ``bench/results/NAME.md``, with the line that says
when, where and by which command it was measured. Run it after the benchmarks; nothing
in those blocks is written by hand.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCKS = {
    "peers": ["## Summary"],
    "glm": ["## Summary", "## Cross-validated path"],
    "sparse": ["## Summary"],
    "placement": ["## Summary"],
    "placement_async": ["## Summary"],
    "features": ["## Summary"],
    "reduction": ["## Results"],
}


def section(markdown: str, heading: str) -> str:
    """The text of the section whose heading starts with ``heading`` (a level-2 heading
    one level down), without its heading; empty when absent."""
    m = re.search(rf"^{re.escape(heading)}.*$", markdown, flags=re.M)
    if m is None:
        return ""
    rest = markdown[m.end() :]
    end = re.search(r"^## ", rest, flags=re.M)
    title = m.group(0).removeprefix("## ")
    body = (rest[: end.start()] if end else rest).strip()
    return body if heading == "## Summary" else f"*{title}*\n\n{body}"


def block(name: str) -> str:
    markdown = (ROOT / "bench" / "results" / f"{name}.md").read_text()
    measured = next(line for line in markdown.splitlines() if line.startswith("Measured "))
    parts = [section(markdown, h) for h in BLOCKS[name]]
    return "\n\n".join([measured, *(p for p in parts if p)])


def main() -> int:
    readme = ROOT / "README.md"
    text = readme.read_text()
    for name in BLOCKS:
        start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
        if start not in text or end not in text:
            print(f"README.md has no {start} ... {end} block", file=sys.stderr)
            return 1
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{start}\n{block(name)}\n{end}{tail}"
    readme.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
