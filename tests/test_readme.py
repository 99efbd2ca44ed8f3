"""Every command in the ``bash`` blocks of README.md and docs/*.md runs as written: the data
commands run, each ``rhmdiff.main`` (or ``rhmdiff``, its console script) command passes
``--check`` (after the data commands, in a fresh directory that holds only ``configs/`` and
``launch/``), each launcher prints its commands with ``--dry_run``, every other ``python -m``
module and every benchmark script answers ``--help`` and every pip extra exists in
pyproject.toml. Also: every config file, benchmark, launcher,
figure and page that the pages name exists."""
import glob
import os
import re
import shlex
import subprocess
import sys
import tomllib

import pytest

from conftest import ROOT

PAGES = [os.path.join(ROOT, "README.md"), *sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))]
# modules whose commands run as written (they make data or files that later commands use)
RUN_AS_WRITTEN = ("rhmdiff.data.demo_text", "rhmdiff.data.images", "rhmdiff.rhm_rules")


def readme_commands() -> list[list[str]]:
    """The commands of the pages' bash blocks (continued lines joined, split at ``&&``)."""
    blocks = []
    for page in PAGES:
        with open(page) as f:
            blocks += re.findall(r"```bash\n(.*?)```", f.read(), re.S)
    commands = []
    for line in (line for block in blocks for line in block.replace("\\\n", " ").splitlines() if line.strip()):
        words = shlex.split(line)
        while "&&" in words:
            commands.append(words[:words.index("&&")])
            words = words[words.index("&&") + 1:]
        commands.append(words)
    return commands


def test_every_readme_command_runs_as_written(tmp_path, monkeypatch):
    commands = readme_commands()
    assert len(commands) >= 10
    for folder in ("configs", "launch"):
        (tmp_path / folder).symlink_to(os.path.join(ROOT, folder))
    monkeypatch.chdir(tmp_path)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    checked, workdirs = set(), set()
    for argv in commands:
        if argv[0] == "rhmdiff":  # the console script (installed by pip): what python -m rhmdiff.main runs
            argv = ["python", "-m", "rhmdiff.main", *argv[1:]]
        if argv[:2] == ["pip", "install"]:
            for extra in re.findall(r"\[(\w+)\]", " ".join(argv)):
                assert extra in extras, f"README installs the unknown extra [{extra}]"
        elif argv[:2] == ["python", "-m"] and argv[2] in ("rhmdiff.main", *RUN_AS_WRITTEN):
            check = ["--check"] if argv[2] == "rhmdiff.main" else []
            proc = subprocess.run([sys.executable, *argv[1:], *check], env=env, capture_output=True, text=True)
            needs = re.match(r"rhmdiff: error: config.analysis.run_dir: (\S+) holds no config.json", proc.stderr)
            if needs and needs.group(1) in workdirs:  # reads the run of an earlier command, not made here
                continue
            assert proc.returncode == 0, f"{shlex.join(argv)}: {proc.stderr[-2000:]}"
            workdirs.update(a.split("=", 1)[1] for a in argv if a.startswith("--workdir="))
        elif argv[0].startswith("launch/"):
            assert "--dry_run" in argv, f"the pages' launcher commands should be dry runs: {shlex.join(argv)}"
            proc = subprocess.run(argv, env=env, capture_output=True, text=True)
            if proc.returncode == 1 and re.fullmatch(r"rhmdiff: error: data\.\w+: '/data/[^']+' does not exist\n",
                                                     proc.stderr):
                continue  # the launcher checked the dataset the page downloads first (not here)
            assert proc.returncode == 0 and proc.stdout.strip(), f"{shlex.join(argv)}: {proc.stderr}"
        elif argv[:2] == ["python", "-m"] and argv[2] != "pytest":
            proc = subprocess.run([sys.executable, "-m", argv[2], "--help"], env=env, capture_output=True, text=True)
            assert proc.returncode == 0, f"python -m {argv[2]} --help: {proc.stderr[-2000:]}"
        elif argv[0] == "python" and argv[1].startswith("benchmarks/"):
            proc = subprocess.run([sys.executable, os.path.join(ROOT, argv[1]), "--help"], env=env,
                                  capture_output=True, text=True)
            assert proc.returncode == 0, f"{argv[1]} --help: {proc.stderr[-2000:]}"
            checked.add(argv[1])
            continue
        elif argv[:3] != ["python", "-m", "pytest"]:
            raise AssertionError(f"a command this test does not know how to run: {shlex.join(argv)}")
        checked.add(argv[2] if argv[0] == "python" else argv[0])
    assert {"rhmdiff.main", *RUN_AS_WRITTEN, "launch/slurm.sh", "launch/tpu_vm.sh"} <= checked


@pytest.mark.parametrize("pattern", [r"`(configs/[\w.]+\.py)", r"`(benchmarks/[\w.]+\.py)", r"`(launch/[\w.]+)",
                                     r"\]\(([\w./]+\.(?:png|md))\)"])
def test_every_file_the_pages_name_exists(pattern):
    """Paths in backquotes are relative to the repository; links are relative to their page."""
    missing, found = [], 0
    for page in PAGES:
        with open(page) as f:
            names = set(re.findall(pattern, f.read())) - {"configs/my_task.py"}  # "Adding an experiment"
        found += len(names)
        base = os.path.dirname(page) if pattern.startswith("\\]") else ROOT
        missing += [f"{os.path.relpath(page, ROOT)}: {n}" for n in sorted(names)
                    if not os.path.exists(os.path.join(base, n))]
    assert found and not missing, missing


def test_the_console_script_is_the_command_line():
    """pyproject.toml's ``rhmdiff`` script runs what ``python -m rhmdiff.main`` runs (.ci/run
    compares the two from a fresh install)."""
    import rhmdiff.main
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        module, function = tomllib.load(f)["project"]["scripts"]["rhmdiff"].split(":")
    assert module == "rhmdiff.main" and getattr(rhmdiff.main, function) is rhmdiff.main.run
    with open(rhmdiff.main.__file__) as f:
        assert f.read().rstrip().endswith('if __name__ == "__main__":\n    run()')


def test_the_readme_is_a_front_page():
    """At most 250 lines, with the two set-up commands first and a results table."""
    with open(PAGES[0]) as f:
        text = f.read()
    assert len(text.splitlines()) <= 250
    first = readme_commands()[:4]
    assert first[1][:3] == ["python", "-m", "rhmdiff.main"] and first[3][:3] == ["python", "-m", "pytest"]
    assert "## Results at a glance" in text
