"""The two ways to install the course cannot drift apart, and the pins are the ones installed."""
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, v = line.partition("==")
            assert v, f"requirements.txt line {line!r} is not an exact '==' pin"
            out[name.lower()] = v
    return out


def test_environment_yml_reads_requirements_and_pins_nothing_else():
    text = (ROOT / "environment.yml").read_text()
    assert "- -r requirements.txt" in text
    assert "python=3.11" in text
    for name in pins():  # a package pinned in both places could disagree
        assert f" {name}=" not in text and f" {name}==" not in text


def test_installed_versions_match_the_pins():
    wrong = {n: (v, version(n)) for n, v in pins().items() if version(n) != v}
    assert not wrong, f"installed versions differ from requirements.txt (pinned, installed): {wrong}"


def test_ci_runs_the_readme_test_command():
    readme, ci = (ROOT / "README.md").read_text(), (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make test" in ci.splitlines()[-1]
