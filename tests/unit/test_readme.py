"""The README says what the code does: its settings tables and its two leading commands."""

from pathlib import Path

from roles.settings import ROLES_WITH_SETTINGS, readme_tables

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def test_settings_tables_are_the_declared_settings():
    # Regenerate with: python -m roles.settings README.md
    assert readme_tables(README) == README
    for role in ROLES_WITH_SETTINGS:
        assert f"<!-- settings:{role} -->" in README


def test_readme_leads_with_demo_and_test_and_ci_runs_the_test_command():
    first_commands = [line.split("#")[0].strip() for line in README.splitlines()
                      if line.startswith("    make ")][:2]
    assert first_commands == ["make demo", "make test"]
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_the_refusals_table_names_every_refused_flag():
    import re

    from roles.webui.flags import OWNED

    row = next(line for line in README.splitlines() if line.startswith("| a flag in `webui_extra"))
    named = re.findall(r"`(-[a-z-]+\*?)`", row)
    for flag in OWNED:
        assert any(flag == n or (n.endswith("*") and flag.startswith(n[:-1])) for n in named), \
            flag
