"""Everyday mistakes and accidents: nothing lost that is not rhmdiff's, nothing stale reported,
every refusal one line naming the field or path (the README's "Faults and bad input" table)."""
import fcntl
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, execute, load_config, run_task
from rhmdiff import files, workdir as workdir_lib
from rhmdiff.metrics import read_metrics

# one worker runs this file: its tests share a module fixture
pytestmark = pytest.mark.xdist_group("faults")


def tiny_rhm(**train):
    c = load_config("rhm_L3")
    c.rhm.update(v=4, m=2)
    c.data.update(train_size=64, val_size=32, test_size=16)
    c.model.width = 16
    c.diffusion.T = 20
    c.train.update(dict(dict(num_steps=40, eval_every=20, steps_per_call=10, batch_size=8), **train))
    c.eval.update(num_generated=32, batch_size=32)
    return c


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny rhm run (trained, generated, evaluated)."""
    workdir = tmp_path_factory.mktemp("finished") / "run"
    code, err = execute(tiny_rhm(), workdir)
    assert code == 0, err
    return workdir


@pytest.mark.parametrize("args, needle", [
    (["--config=configs/nope.py"], "--config: [Errno 2] No such file"),
    (["--config=configs/rhm_L3.py:huge"], "preset must be one of"),
    (["--config=configs/rhm_L3.py", "extra"], "unexpected arguments"),
    (["--config=configs/rhm_L3.py", "--config.rhm.nope=1"], "config.rhm.nope: the config has no such key"),
    (["--config=configs/rhm_L3.py", "--config.train.lrr=0.1"],
     "rhmdiff: error: config.train.lrr: the config has no such key; did you mean config.train.lr?"),
    (["--config=configs/rhm_L3.py", "--config.trainn.lr=0.1"],
     "rhmdiff: error: config.trainn.lr: the config has no such key; did you mean config.train.lr?"),
])
def test_command_line_mistakes_are_one_line(tmp_path, args, needle):
    proc = subprocess.run([sys.executable, "-m", "rhmdiff.main", f"--workdir={tmp_path / 'w'}", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and needle in one_line(proc.stderr)
    assert not (tmp_path / "w").exists()


def test_a_missing_config_or_workdir_is_one_line_with_the_usage(tmp_path):
    for args, missing in (([], "--config and --workdir"), ([f"--workdir={tmp_path / 'w'}"], "--config")):
        proc = subprocess.run([sys.executable, "-m", "rhmdiff.main", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 2 and one_line(proc.stderr) == (
            f"rhmdiff: error: {missing} missing: usage: python -m rhmdiff.main --config=configs/FILE.py[:preset] "
            "--workdir=DIR [--config.key=value ...] [--check]")


def test_ctrl_c_outside_training_is_one_line_and_exit_130(monkeypatch, capsys):
    """A Ctrl-C that KeyboardInterrupt carries out of the run (a second one in training, or one
    during data preparation or evaluation): one line, exit 130."""
    import types

    from rhmdiff import main as cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "execute", interrupted)
    for flag, value in (("_CONFIG", tiny_rhm()), ("_WORKDIR", "w"), ("_CHECK", False)):
        monkeypatch.setattr(cli, flag, types.SimpleNamespace(value=value))
    with pytest.raises(SystemExit) as stop:
        cli.main(["rhmdiff"])
    assert stop.value.code == 130 and one_line(capsys.readouterr().err) == (
        "rhmdiff: interrupted (Ctrl-C); rerun the same command to resume")


def test_check_says_what_the_run_would_do_and_writes_nothing(tmp_path, finished):
    """``--check`` runs the workdir's checks read-only: a new, a finished, a stopped and a
    foreign workdir, another config, overwrite, a held lock; a refusal is the real run's line."""
    def check(config, workdir):
        before = sorted((str(p), p.stat().st_mtime_ns) for p in workdir.rglob("*")) if workdir.exists() else None
        code, err = execute(config, workdir, check=True)
        assert before == (sorted((str(p), p.stat().st_mtime_ns) for p in workdir.rglob("*")) if workdir.exists()
                          else None), "--check changed the workdir"
        return code, one_line(err)

    def refused_alike(config, workdir):
        code, line = check(config, workdir)
        real, err = execute(config, workdir)
        assert code == real == 2 and line == one_line(err), (line, err)

    assert check(tiny_rhm(), tmp_path / "new") == (0, f"rhmdiff: config OK (task rhm); the run would start a new run "
                                                     f"in {tmp_path / 'new'}; nothing written")
    assert not (tmp_path / "new").exists()
    code, line = check(tiny_rhm(), finished)
    assert code == 0 and f"the run would evaluate the run in {finished} again (its training finished at step 40)" in line
    c = tiny_rhm()
    c.eval.num_generated = 48
    assert "again with the changed evaluation settings config.eval.num_generated" in check(c, finished)[1]
    stopped = tmp_path / "stopped"
    (stopped / "checkpoints" / "20").mkdir(parents=True)
    (stopped / "config.json").write_text(json.dumps(workdir_lib.experiment(tiny_rhm())))
    (stopped / ".rhmdiff").write_text("{}")
    assert f"the run would resume the run in {stopped} from its checkpoint of step 20;" in check(tiny_rhm(), stopped)[1]
    c = tiny_rhm()
    c.train.lr = 0.5
    refused_alike(c, finished)
    c.overwrite = True
    assert (f"the run would delete the outputs of the run in {finished} (config.train.lr changed) and start over"
            in check(c, finished)[1])
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"architectures": ["GPT2"]}')
    (foreign / "flax_model.msgpack").write_bytes(b"weights")
    refused_alike(tiny_rhm(), foreign)
    fd = os.open(stopped / ".rhmdiff.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b"pid 4242 on elsewhere")
    try:
        refused_alike(tiny_rhm(), stopped)
    finally:
        os.close(fd)


def test_two_runs_started_at_the_same_moment_on_one_workdir(tmp_path):
    """Two claims of one new workdir at the same moment: one takes it, the other is refused."""
    import threading
    outcomes, start = [], threading.Barrier(2)

    def claim():
        start.wait()
        try:
            outcomes.append(workdir_lib.claim(tiny_rhm(), str(tmp_path / "run")))
        except workdir_lib.WorkdirError as e:
            outcomes.append(str(e))

    threads = [threading.Thread(target=claim) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    refused = [o for o in outcomes if isinstance(o, str)]
    assert len(refused) == 1 and "another rhmdiff run is using it" in refused[0]
    for o in outcomes:
        if not isinstance(o, str):
            o.release()


def test_a_crash_while_results_are_written_leaves_the_previous_file(tmp_path, monkeypatch):
    """A crash (here: an interrupt at the flush) while results.json is written: the previous file
    is intact and no temporary file is left; results are never torn."""
    files.write_json(tmp_path / "results.json", {"accuracy": [0.5]})

    def crash(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        files.write_json(tmp_path / "results.json", {"accuracy": [0.9] * 100_000})
    assert json.loads((tmp_path / "results.json").read_text()) == {"accuracy": [0.5]}
    assert os.listdir(tmp_path) == ["results.json"]


def test_a_nan_learning_rate_is_refused(tmp_path):
    c = tiny_rhm(lr=float("nan"))
    code, err = execute(c, tmp_path / "run", check=True)
    assert code == 2 and one_line(err).startswith("rhmdiff: error: config.train.lr: must be a number in")


def test_workdir_that_is_a_file_or_not_writable(tmp_path):
    (tmp_path / "afile").write_text("x")
    code, err = execute(tiny_rhm(), tmp_path / "afile")
    assert code == 2 and "is a file" in one_line(err) and (tmp_path / "afile").read_text() == "x"
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        code, err = execute(tiny_rhm(), locked / "run")
        assert code == 2 and "--workdir" in one_line(err)


def test_a_directory_rhmdiff_did_not_create_is_never_touched(tmp_path):
    model = tmp_path / "hf_model"  # e.g. a Hugging Face model: config.json and weights
    model.mkdir()
    (model / "config.json").write_text('{"architectures": ["GPT2"]}')
    (model / "flax_model.msgpack").write_bytes(b"weights")
    c = tiny_rhm()
    c.overwrite = True
    code, err = execute(c, model)
    assert code == 2 and "did not create" in one_line(err)
    assert sorted(os.listdir(model)) == ["config.json", "flax_model.msgpack"]


THROWAWAY_TASK = '''"""A task that exists only in a test."""
from rhmdiff.tasks import finish

MUTABLE = ()
OUTPUTS = ("throwaway.json", "throwaway.png", "throwaway_samples.npy")


def validate(config):
    pass


def run(config, workdir):
    (workdir / "throwaway_samples.npy").write_bytes(b"samples")
    return finish(config, workdir, {"task": "throwaway", "value": config.value}, "throwaway.json")
'''


def test_a_new_task_declares_its_outputs_and_overwrite_deletes_exactly_them(tmp_path, monkeypatch):
    """A task module that exists nowhere else (no list of outputs names its files): its
    declared outputs go on overwrite, the user's file stays; a task that writes a file it did
    not declare is stopped before it writes it."""
    import ml_collections

    from rhmdiff import config_base, tasks
    package = tmp_path / "extra_tasks"
    package.mkdir()
    (package / "throwaway.py").write_text(THROWAWAY_TASK)
    (package / "sloppy.py").write_text(THROWAWAY_TASK.replace('"throwaway.json", ', ""))
    monkeypatch.setattr(tasks, "__path__", [*tasks.__path__, str(package)])
    workdir = tmp_path / "run"
    config = lambda value, task="throwaway": ml_collections.ConfigDict(
        dict(config_base.base_config(task).to_dict(), value=value))
    assert execute(config(1), workdir)[0] == 0
    assert sorted(os.listdir(workdir)) == [".rhmdiff", ".rhmdiff.lock", "config.json", "throwaway.json",
                                           "throwaway_samples.npy"]
    (workdir / "notes.txt").write_text("the user's notes")
    c = config(2)
    c.overwrite = True
    assert execute(c, workdir, user_files=True)[0] == 0
    assert json.loads((workdir / "throwaway.json").read_text())["value"] == 2
    c = config(3, "sloppy")
    c.overwrite = True
    with pytest.raises(RuntimeError, match="writes throwaway.json without declaring it in its OUTPUTS"):
        execute(c, workdir)
    assert sorted(os.listdir(workdir)) == [".rhmdiff", ".rhmdiff.lock", "config.json", "notes.txt",
                                           "throwaway_samples.npy"]
    assert (workdir / "notes.txt").read_text() == "the user's notes"


def test_a_given_grammar_trains_and_an_edited_rules_file_is_refused(tmp_path):
    """``rhm.rules_file``: the grammar the config would draw, written by ``rhmdiff.rhm_rules``,
    is the grammar the run uses; a rules file edited after the run started is refused on the
    rerun (its content hash is part of the run); sizes that disagree with the config and an
    ambiguous grammar are one-line errors naming the field."""
    from rhmdiff import from_config, rhm
    c = tiny_rhm()
    rules = tmp_path / "rules.npy"
    proc = subprocess.run([sys.executable, "-m", "rhmdiff.rhm_rules", "--config=configs/rhm_L3.py",
                           f"--out={rules}", "--config.rhm.v=4", "--config.rhm.m=2", "--config.data.train_size=64",
                           "--config.data.val_size=32", "--config.data.test_size=16"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    drawn = from_config.grammar(c)
    c.rhm.rules_file = str(rules)
    np.testing.assert_array_equal(from_config.grammar(c).rules, drawn.rules)
    workdir = tmp_path / "run"
    assert run_task(c, workdir, stop_at=20) is None
    stored = json.loads((workdir / "config.json").read_text())
    assert stored["inputs"]["rhm"]["rules_file"] == hashlib.sha256(rules.read_bytes()).hexdigest()
    edited = np.asarray(drawn.rules).copy()
    edited[0, [0, 1]] = edited[0, [1, 0]]  # two level-1 symbols swap their productions: still a grammar
    rhm.save_rules(rules, rhm.from_rules(edited))
    code, err = execute(c, workdir)
    assert code == 2 and "the contents of config.rhm.rules_file" in one_line(err)
    c.rhm.m = 3
    code, err = execute(c, tmp_path / "other", check=True)
    assert code == 2 and one_line(err).startswith("rhmdiff: error: config.rhm.m: is 3 but rhm.rules_file")
    c.rhm.m = 2
    edited[0, 1, 0] = edited[0, 0, 0]
    np.save(rules, edited)
    code, err = execute(c, tmp_path / "other", check=True)
    assert code == 1 and "config.rhm.rules_file" in one_line(err) and "ambiguous" in err


def test_overwrite_never_clears_the_current_directory_or_its_ancestors(tmp_path, monkeypatch, finished):
    src = tmp_path / "checkout"
    src.mkdir()
    (src / ".rhmdiff").write_text("{}")  # even if it carries the marker (an earlier --workdir=.)
    (src / "config.json").write_text(json.dumps(workdir_lib.experiment(tiny_rhm(num_steps=20))))
    (src / "results.json").write_text("{}")
    (src / "main.py").write_text("# the user's code")
    monkeypatch.chdir(src)
    c = tiny_rhm()
    c.overwrite = True
    for where in (".", str(tmp_path)):
        if where != ".":
            (tmp_path / ".rhmdiff").write_text("{}")
            (tmp_path / "config.json").write_text((src / "config.json").read_text())
        code, err = execute(c, where)
        assert code == 2 and "current directory or one of its ancestors" in one_line(err)
    assert (src / "main.py").exists() and (src / "results.json").exists()


def test_inputs_are_checked_before_the_workdir_is_claimed(tmp_path, inputs):
    run = tmp_path / "md4"
    c = load_config("md4_owt_tiny")
    c.data.update(path=str(tmp_path / "typo"), tokenizer_path=inputs["tokenizer"])
    code, err = execute(c, run)
    assert code == 1 and one_line(err).startswith("rhmdiff: error: data.path:") and not run.exists()
    # overwrite of an existing run with a missing input: refused before anything is deleted
    (run).mkdir()
    (run / ".rhmdiff").write_text("{}")
    (run / "results.json").write_text("{}")
    c.overwrite = True
    code, err = execute(c, run)
    assert code == 1 and (run / "results.json").exists()


def test_a_data_error_after_the_claim_does_not_block_the_corrected_rerun(tmp_path, inputs):
    """The batch is larger than the corpus's training sequences (found when tokenizing):
    exit 1; the same workdir then takes the corrected config."""
    c = load_config("md4_owt_tiny")
    c.data.update(path=inputs["corpus"], tokenizer_path=inputs["tokenizer"], seq_len=64)
    c.train.update(batch_size=4096, num_steps=-1)
    code, err = execute(c, tmp_path / "run")
    assert code == 1 and "train.batch_size = 4096 exceeds" in one_line(err)
    assert sorted(os.listdir(tmp_path / "run")) == [".rhmdiff", ".rhmdiff.lock", "cache", "config.json"]
    c.train.update(batch_size=8, num_steps=2)
    c.model.update(num_layers=1, num_heads=2, head_dim=8, cond_dim=8, mlp_multiple_of=8)
    c.eval.update(val_sequences=4, batch_size=4, num_samples=2, sample_steps=2)
    c.train.update(eval_every=2, keep_tokens=(512.0,))
    code, err = execute(c, tmp_path / "run")
    assert code == 0, err


def test_unreadable_or_empty_config_json(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".rhmdiff").write_text("{}")
    (run / "config.json").write_text("")  # power loss during an old, non-atomic write
    (run / "results.json").write_text("{}")
    code, err = execute(tiny_rhm(), run)
    assert code == 2 and "config.json is unreadable" in one_line(err) and (run / "results.json").exists()
    c = tiny_rhm(num_steps=10, eval_every=10)
    c.overwrite = True
    code, err = execute(c, run)
    assert code == 0, err
    assert json.loads((run / "config.json").read_text())["train"]["num_steps"] == 10


def test_a_bucket_workdir_without_its_filesystem_library_names_the_extra(no_gcsfs):
    """A gs:// workdir without gcsfs: exit 2, one line naming the extra to install (the real run),
    and --check names it without refusing (a launcher checks on a machine that needs no bucket
    access)."""
    code, err = execute(tiny_rhm(), "gs://bucket/run")
    assert code == 2 and one_line(err) == ("rhmdiff: error: --workdir gs://bucket/run: gs:// paths need gcsfs, which is "
                                           "not installed (the gcs extra: pip install -e '.[gcs]')")
    code, err = execute(tiny_rhm(), "gs://bucket/run", check=True)
    assert code == 0 and "gs://bucket/run, which is not checked here: gs:// paths need gcsfs" in one_line(err)


def test_a_second_run_in_the_same_workdir_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    fd = os.open(run / ".rhmdiff.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # what a running rhmdiff process holds
    os.write(fd, b"pid 4242 on elsewhere")
    try:
        code, err = execute(tiny_rhm(), run)
        assert code == 2 and "another rhmdiff run is using it (pid 4242 on elsewhere)" in one_line(err)
    finally:
        os.close(fd)
    assert not (run / "config.json").exists()


def test_evaluation_settings_may_change_on_a_finished_run(finished):
    """More generated sequences: the evaluation is re-run on the trained model; another
    training setting is refused."""
    before = json.loads((finished / "results.json").read_text())
    c = tiny_rhm()
    c.eval.num_generated = 48
    code, err = execute(c, finished)
    assert code == 0, err
    after = json.loads((finished / "results.json").read_text())
    assert after["num_generated"] == 48 and after["steps"] == before["steps"] == 40
    assert after["val_loss"] == before["val_loss"] and np.load(finished / "generated.npy").shape == (48, 8)
    assert [r["step"] for r in read_metrics(finished / "metrics.jsonl")] == [20, 40]
    c.train.lr = 0.5
    code, err = execute(c, finished)
    assert code == 2 and "config.train.lr: 0.1 -> 0.5" in one_line(err)


def test_versions_are_recorded_and_a_resume_with_other_code_is_flagged(finished, caplog):
    stored = json.loads((finished / "config.json").read_text())
    results = json.loads((finished / "results.json").read_text())
    for record in (stored["versions"], results["versions"]):
        assert {"rhmdiff", "jax", "flax", "optax", "orbax-checkpoint", "numpy"} <= set(record)
    stored["versions"]["jax"] = "0.0.1"
    (finished / "config.json").write_text(json.dumps(stored))
    c = tiny_rhm()
    c.eval.num_generated = 48
    assert execute(c, finished)[0] == 0
    assert "jax 0.0.1 -> " in caplog.text and "other code or libraries" in caplog.text


def test_torn_metrics_line_and_a_resume(tmp_path):
    c = tiny_rhm()
    assert run_task(c, tmp_path / "run", stop_at=20) is None
    with open(tmp_path / "run" / "metrics.jsonl", "a") as f:
        f.write('{"step": 30, "train/obj')  # a kill during the write
    out = run_task(c, tmp_path / "run")
    assert out["steps"] == 40
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [20, 40]


def test_no_loadable_checkpoint_stops_and_restart_starts_over(tmp_path):
    c = tiny_rhm()
    full = run_task(c, tmp_path / "full")
    assert run_task(c, tmp_path / "run", stop_at=20) is None
    for path in (tmp_path / "run" / "checkpoints").rglob("*"):
        if path.is_file():
            path.write_bytes(b"garbage")
    code, err = execute(c, tmp_path / "run")
    assert code == 1 and "none of the checkpoints" in one_line(err) and "--config.restart=True" in err
    assert os.listdir(tmp_path / "run" / "unreadable_checkpoints") and not (tmp_path / "run" / "results.json").exists()
    c.restart = True
    code, err = execute(c, tmp_path / "run")
    assert code == 0, err
    again = json.loads((tmp_path / "run" / "results.json").read_text())
    assert again["accuracy"] == full["accuracy"] and again["val_loss"] == full["val_loss"]


def test_a_run_of_another_task_is_named(tmp_path, finished):
    c = load_config("text_analysis", "tiny")
    c.analysis.run_dir = str(finished)
    code, err = execute(c, tmp_path / "analysis")
    assert code == 2 and "is a run of task 'rhm', not 'md4'" in one_line(err)


def test_results_are_strict_json(tmp_path):
    files.write_json(tmp_path / "r.json", {"a": float("nan"), "b": [1.0, float("inf")], "c": np.float32(2.5)})
    reject = lambda name: (_ for _ in ()).throw(ValueError(name))
    assert json.loads((tmp_path / "r.json").read_text(), parse_constant=reject) == {"a": None, "b": [1.0, None],
                                                                                   "c": 2.5}
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    umask = os.umask(0o022)
    os.umask(umask)
    assert os.stat(tmp_path / "r.json").st_mode & 0o777 == 0o666 & ~umask  # like open(), not mkstemp's 0600
