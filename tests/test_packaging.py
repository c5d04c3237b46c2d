"""pyproject.toml declares what `import course` needs and a `course` console script; `pip install -e .` in a fresh
virtual environment gives a working `course` command. The exact pins stay in requirements.txt."""
import ast
import os
import subprocess
import sys
import sysconfig
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.test_environment import pins

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def declared(groups=True) -> dict[str, Requirement]:
    reqs = list(PROJECT["dependencies"])
    if groups:
        reqs += [r for extra in PROJECT["optional-dependencies"].values() for r in extra]
    return {Requirement(r).name.lower(): Requirement(r) for r in reqs}


def test_every_pin_is_declared_and_every_declaration_admits_its_pin():
    pinned, reqs = pins(), declared()
    assert set(reqs) == set(pinned), ("declared in pyproject.toml only", set(reqs) - set(pinned),
                                      "pinned in requirements.txt only", set(pinned) - set(reqs))
    for name, req in reqs.items():
        assert req.specifier.contains(pinned[name]), (name, str(req.specifier), pinned[name])


def test_every_library_the_package_imports_is_a_runtime_dependency():
    modules = set()
    for f in (ROOT / "course").rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                modules |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules.add(node.module.split(".")[0])
    dists = packages_distributions()
    third_party = {m for m in modules - set(sys.stdlib_module_names) - {"course", "__future__"}}
    runtime = set(declared(groups=False))
    missing = {m: dists.get(m) for m in third_party if not {d.lower() for d in dists.get(m, [])} & runtime}
    assert not missing, f"imported by course/ but not in pyproject.toml's dependencies: {missing}"
    assert PROJECT["scripts"]["course"] == "course.__main__:console"


@pytest.mark.slow
def test_pip_install_editable_in_a_fresh_venv_gives_the_course_command(tmp_path):
    """The fresh venv sees this environment's packages through a .pth file, so pip resolves the declared
    dependencies against them instead of downloading them again; only the build backend (setuptools, in pip's
    isolated build environment) comes from the package index, as in make setup."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        (src / name).write_bytes((ROOT / name).read_bytes())
    subprocess.run(["cp", "-r", str(ROOT / "course"), str(src / "course")], check=True)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "course_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    py, env = venv / "bin" / "python", {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", "-e", str(src)],
                   check=True, timeout=300, env=env, cwd=tmp_path)
    requires = subprocess.run([str(py), "-c", "from importlib.metadata import requires; print(requires('cnn-course'))"],
                              capture_output=True, text=True, check=True, env=env, cwd=tmp_path).stdout
    assert "jax>=" in requires and "flax>=" in requires and "orbax-checkpoint>=" in requires
    r = subprocess.run([str(venv / "bin" / "course"), "--help"], capture_output=True, text=True, timeout=120,
                       env=env, cwd=tmp_path)
    assert r.returncode == 0 and "train" in r.stdout, r.stderr
    r = subprocess.run([str(py), "-c", "import course; print(course.__file__)"], capture_output=True, text=True,
                       env=env, cwd=tmp_path)
    assert r.stdout.strip() == str(src / "course" / "__init__.py"), r.stderr
