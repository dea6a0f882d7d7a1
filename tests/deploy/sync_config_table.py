"""Copy docs/_config_table.md into every document that marks a place for it.

Usage: `uv run python -m tests.deploy.sync_config_table`. A document opts in with the two lines
`<!-- config-table:start -->` and `<!-- config-table:end -->`; whatever is between them is replaced.
tests/deploy/test_env_documented.py fails while a marked document holds a stale copy.
"""

from __future__ import annotations

import re
import sys

from tests.deploy.envdocs import ROOT

TABLE = ROOT / "docs" / "_config_table.md"
DOCUMENTS = (ROOT / "docs" / "deploy.md", ROOT / "README.md")
START, END = "<!-- config-table:start -->", "<!-- config-table:end -->"
_BLOCK = re.compile(re.escape(START) + r"\n.*?" + re.escape(END), re.DOTALL)


def with_table(text: str, table: str) -> str:
    """`text` with the marked block replaced by `table` (unchanged when it has no markers)."""
    return _BLOCK.sub(lambda _: f"{START}\n{table.strip()}\n{END}", text)


def main() -> int:
    """Rewrite the marked documents; print which changed."""
    table = TABLE.read_text(encoding="utf-8")
    for doc in DOCUMENTS:
        if not doc.exists():
            continue
        text = doc.read_text(encoding="utf-8")
        new = with_table(text, table)
        if new != text:
            doc.write_text(new, encoding="utf-8")
            print(f"updated {doc.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
