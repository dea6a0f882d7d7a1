"""Every environment variable acefarm reads is documented in README.md and .env.example.

The names are the Settings fields (upper-cased) plus every literal `os.environ[...]`, `os.getenv(...)`,
`environ.get(...)` read in the service packages, plus the few read by libraries (AWS credentials,
CUDA_VISIBLE_DEVICES). README.md gets them from the configuration table in docs/_config_table.md.
"""

from __future__ import annotations

from pathlib import Path

from tests.deploy import composefile, sync_config_table
from tests.deploy.envdocs import (
    CLIENT_PACKAGE,
    EXTERNAL_ENV,
    ROOT,
    env_reads,
    env_reads_in_source,
    mentioned,
    parse_env_example,
    required_env_names,
    settings_adapter,
    settings_env_names,
)

TABLE = ROOT / "docs" / "_config_table.md"


def read(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


def where(name: str) -> str:
    reads = [f"{r.path}:{r.line}" for r in env_reads() if r.name == name]
    return f"{name} (read at {', '.join(reads)})" if reads else name


def test_scanner_finds_every_kind_of_read() -> None:
    source = (
        "import os\nfrom os import environ, getenv\nNAME = 'FROM_CONSTANT'\n"
        "a = os.environ['SUBSCRIPT']\nb = os.environ.get('GET', 'x')\nc = os.getenv('GETENV')\n"
        "d = environ.get('BARE_ENVIRON')\ne = getenv('BARE_GETENV')\nf = 'MEMBERSHIP' in os.environ\n"
        "g = os.environ.get(NAME)\nos.environ['WRITTEN_ONLY'] = '1'\nh = {}.get('NOT_ENV')\n"
    )
    names = {r.name for r in env_reads_in_source(source, Path("x.py"))}
    assert names == {"SUBSCRIPT", "GET", "GETENV", "BARE_ENVIRON", "BARE_GETENV", "MEMBERSHIP", "FROM_CONSTANT"}


def test_every_env_var_is_in_env_example_with_a_comment() -> None:
    entries = {e.name: e for e in parse_env_example(read(".env.example"))}
    missing = sorted(where(n) for n in required_env_names() if n not in entries)
    assert not missing, f".env.example does not document: {missing}"
    uncommented = sorted(n for n in required_env_names() if not entries[n].comment)
    assert not uncommented, f".env.example entries without a comment: {uncommented}"


def test_env_example_names_nothing_unknown() -> None:
    """Stale entries fail too: every name is read by acefarm or interpolated by docker-compose.yml."""
    known = required_env_names() | composefile.variables(composefile.load()) | {"COMPOSE_PROFILES"}
    unknown = sorted(e.name for e in parse_env_example(read(".env.example")) if e.name not in known)
    assert not unknown, f".env.example documents variables nothing reads: {unknown}"


def test_env_example_values_are_valid_settings() -> None:
    names = settings_env_names()
    for entry in parse_env_example(read(".env.example")):
        if entry.name in names:
            _, adapter = settings_adapter(entry.name)
            adapter.validate_python(entry.value)


def test_every_env_var_is_in_readme() -> None:
    readme = read("README.md")
    missing = sorted(where(n) for n in required_env_names() if not mentioned(n, readme))
    assert not missing, f"README.md does not document: {missing} (paste docs/_config_table.md into it)"


def test_the_clients_env_vars_are_in_the_client_docs() -> None:
    names = {r.name for r in env_reads((CLIENT_PACKAGE,), skip=None)}
    assert names == {"ACEFARM_URL", "ACEFARM_API_KEY"}
    for doc in ("docs/client.md", "README.md"):
        assert all(mentioned(n, read(doc)) for n in names), f"{doc} does not name {sorted(names)}"


def table_rows() -> dict[str, tuple[str, str]]:
    rows: dict[str, tuple[str, str]] = {}
    for line in TABLE.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = (cells[1], cells[2])
    return rows


def test_config_table_covers_every_variable_with_its_real_default() -> None:
    rows = table_rows()
    assert set(rows) == required_env_names(), {
        "missing": sorted(required_env_names() - set(rows)),
        "extra": sorted(set(rows) - required_env_names()),
    }
    names = settings_env_names()
    for name, (default, meaning) in rows.items():
        assert meaning, f"{name}: no meaning"
        if name in EXTERNAL_ENV:
            assert default == "(unset)", name
            continue
        info, adapter = settings_adapter(name)
        if default == "(unset)":
            assert info.default is None, f"{name}: the table says unset, Settings says {info.default!r}"
        elif default == "(empty)":
            assert info.default == "", f"{name}: the table says empty, Settings says {info.default!r}"
        else:
            assert default.startswith("`") and default.endswith("`"), f"{name}: write the default as `value`"
            assert adapter.validate_python(default.strip("`")) == info.default, (
                f"{name}: the table says {default}, Settings says {info.default!r}"
            )
        assert name in names


def test_config_table_copies_are_current() -> None:
    """docs/deploy.md carries the table between markers; so does README.md once it has them."""
    table = TABLE.read_text(encoding="utf-8")
    deploy = read("docs/deploy.md")
    assert sync_config_table.START in deploy, "docs/deploy.md lost its config-table markers"
    for doc in sync_config_table.DOCUMENTS:
        if doc.exists():
            text = doc.read_text(encoding="utf-8")
            assert sync_config_table.with_table(text, table) == text, (
                f"{doc.relative_to(ROOT)} holds a stale configuration table: "
                "run `uv run python -m tests.deploy.sync_config_table`"
            )


def test_sync_replaces_only_the_marked_block() -> None:
    text = f"intro\n{sync_config_table.START}\nold\n{sync_config_table.END}\noutro\n"
    assert sync_config_table.with_table(text, "| new |\n") == (
        f"intro\n{sync_config_table.START}\n| new |\n{sync_config_table.END}\noutro\n"
    )
    assert sync_config_table.with_table("no markers", "| new |") == "no markers"
