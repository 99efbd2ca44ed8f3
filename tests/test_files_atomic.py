"""rhmdiff.files seen from the target's directory: while an atomic write is under way its
temporary file lives next to the target (same filesystem, so the rename is atomic) and the old
file is intact; the data are flushed to disk before the rename; a crash (an exception or Ctrl-C)
leaves the old file and no temporary one; two writers never share a temporary file. And strict
JSON, .npy and PNG round trips, path helpers."""
import json
import os

import numpy as np
import pytest

from rhmdiff import files


def _others(directory, target):
    return sorted(p for p in os.listdir(directory) if p != target)


def test_the_temporary_file_lives_next_to_the_target_and_the_old_file_stays_until_the_rename(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.chdir(tmp_path)  # a relative target: the temporary file still goes next to it
    (run / "r.json").write_text("old")
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.fstat(fd).st_ino)), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", os.fspath(a), os.fspath(b))),
                                                     real_replace(a, b))[1])
    with files.atomic_write("run/r.json") as f:
        f.write("new")
        tmp = _others(run, "r.json")
        assert len(tmp) == 1 and tmp[0].startswith(".r.json.") and tmp[0].endswith(".tmp")
        assert (run / "r.json").read_text() == "old"
    assert (run / "r.json").read_text() == "new" and _others(run, "r.json") == []
    full_tmp = os.path.join(os.fspath(run), tmp[0])  # flushed to disk, then renamed over the target
    assert events == [("fsync", os.stat(run / "r.json").st_ino), ("replace", full_tmp, os.fspath(run / "r.json"))]
    umask = os.umask(0o022)
    os.umask(umask)
    assert os.stat(run / "r.json").st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("crash", [RuntimeError, KeyboardInterrupt])
def test_a_crash_during_the_write_leaves_the_old_file_and_no_temporary_one(tmp_path, crash):
    target = tmp_path / "results.json"
    files.write_json(target, {"a": 1})
    with pytest.raises(crash), files.atomic_write(target) as f:
        f.write('{"a": 2, "half": ')
        raise crash()
    assert files.read_json(target) == {"a": 1} and _others(tmp_path, "results.json") == []


def test_two_writers_never_share_a_temporary_file(tmp_path):
    target = tmp_path / "x.npy"
    with files.atomic_write(target, "wb") as a, files.atomic_write(target, "wb") as b:
        assert a.name != b.name and len(_others(tmp_path, "x.npy")) == 2
        np.save(a, np.arange(3))
        np.save(b, np.arange(5))
    np.testing.assert_array_equal(files.read_npy(target), np.arange(3))  # the last one renamed wins
    assert _others(tmp_path, "x.npy") == []


def test_strict_json_npy_png_and_paths(tmp_path):
    obj = {1: (float("nan"), np.float32(0.5), [np.inf, -np.inf]), "arr": np.array([[1.0, np.nan]]),
           "i": np.int64(3), "nested": {"t": (1, 2)}}
    files.write_json(tmp_path / "s.json", obj)
    text = (tmp_path / "s.json").read_text()
    reject = lambda name: (_ for _ in ()).throw(ValueError(name))
    assert json.loads(text, parse_constant=reject) == {"1": [None, 0.5, [None, None]], "arr": [[1.0, None]], "i": 3,
                                                       "nested": {"t": [1, 2]}}
    assert text.endswith("}\n")
    a = np.arange(12, dtype=np.int16).reshape(3, 4)
    files.write_npy(tmp_path / "a.npy", a)
    back = files.read_npy(tmp_path / "a.npy")
    assert back.dtype == np.int16 and np.array_equal(back, a)
    files.save_png(tmp_path / "i.png", np.zeros((4, 5, 3), np.uint8))
    assert (tmp_path / "i.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert files.is_remote("gs://b/x") and files.is_remote("s3://b/x") and not files.is_remote("/gs://x")
    assert not files.is_remote("runs/gs")
    assert os.fspath(files.as_path("rel/x")) == os.path.abspath("rel/x")
    assert os.fspath(files.as_path("gs://bucket/run")) == "gs://bucket/run"
