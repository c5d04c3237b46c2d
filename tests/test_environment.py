"""The two ways to install the course cannot drift apart, and the pins are the ones installed."""
import os
import subprocess
import sys
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


def test_importing_course_sets_nothing_global_until_configure():
    """`import course` leaves JAX's PRNG and cache alone; course.configure() sets them (a fresh interpreter,
    since this test process has configured JAX already)."""
    code = ("import jax, course; a = jax.config.jax_default_prng_impl; c = jax.config.jax_compilation_cache_dir;"
            " course.configure(); print(a, c, jax.config.jax_default_prng_impl, jax.config.jax_compilation_cache_dir)")
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env["COURSE_CACHE_DIR"] = "/tmp/course-cache-probe"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    before_prng, before_cache, after_prng, after_cache = out.stdout.split()
    assert before_prng == "threefry2x32" and before_cache == "None"
    assert after_prng == "philox4x32" and after_cache == "/tmp/course-cache-probe/jax"


def test_the_library_never_imports_the_lessons_or_the_tools():
    """The layout's one rule (README, "What is in the repository"): course/lessons/ may use the library, tools/
    may use both, never the reverse. Read from every library module's import statements."""
    import ast

    upward = []
    for path in sorted((ROOT / "course").rglob("*.py")):
        if "lessons" in path.relative_to(ROOT / "course").parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            upward += [f"{path.relative_to(ROOT)}: {n}" for n in names
                       if n.startswith(("course.lessons", "tools")) or (n == "course" and isinstance(node, ast.ImportFrom)
                                                                         and any(a.name == "lessons" for a in node.names))]
    assert not upward, upward
