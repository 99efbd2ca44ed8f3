"""Shared fixtures: tiny grammars and a brute-force enumeration of their language, configs and
stand-in inputs, and the command line run in process."""
import itertools
import os
import signal

# A suite started in the background of a non-interactive shell (`bash .ci/run &`, nohup)
# inherits SIGINT ignored: Python then installs no KeyboardInterrupt handler, and the command
# lines the tests start inherit the ignored signal too. The Ctrl-C tests need what a terminal
# gives: Python's own handler (children started by exec get SIGINT's default back).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# The suite runs on the CPU, with 4 fake devices for the data-parallel tests, also on a
# machine whose JAX sees a GPU or TPU (and so do the command lines it starts).
os.environ["JAX_PLATFORMS"] = "cpu"
# The tests' programs are small: compiling them, not running them, is most of the suite's
# time, and XLA:CPU's backend at optimization level 0 compiles ~25% faster (also for the
# command lines the tests start, which inherit the flag).
os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"

import chex  # noqa: E402

chex.set_n_cpu_devices(4)  # before any JAX computation: lets tests pmap over 4 CPU devices

import atexit  # noqa: E402
import gc  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

# Trainer tests compile the same step functions several times (one fit per run): a
# session-local persistent cache turns the repeats into cache hits.
_CACHE = tempfile.mkdtemp(prefix="rhmdiff-jax-cache-")
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
# ... shared with the command-line runs the tests start (JAX reads its flags from the environment).
os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.2"

from rhmdiff import rhm  # noqa: E402
from rhmdiff.config_base import sibling_config  # noqa: E402


def _memory_maps() -> int:
    """The number of memory regions this process maps (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/maps") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


@pytest.fixture(autouse=True)
def _release_compiled_programs():
    """XLA:CPU maps a few memory regions for every compiled program, and JAX keeps the programs
    of every jitted function alive. Over the whole suite in one process the count approaches
    Linux's limit of 65,530 regions (vm.max_map_count), where a compilation dies with a
    segmentation fault (seen in CI and here, in test_train.py, late in the suite; the test
    alone passes). Past half the limit, drop JAX's caches so the programs are unmapped."""
    yield
    if _memory_maps() > 30_000:
        jax.clear_caches()
        gc.collect()


TINY = [(3, 2, 2, 2), (4, 2, 3, 2), (2, 2, 2, 3)]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name: str, *preset):
    """``configs/<name>.py``'s ``get_config(*preset)``."""
    return sibling_config(os.path.join(ROOT, "configs", "x.py"), name).get_config(*preset)


def undeclared_outputs(workdir) -> list[str]:
    """The entries of a finished run's ``workdir`` (and of its marked sub-runs) that its task
    does not declare in ``OUTPUTS``: a task must declare everything it writes, so that
    overwrite deletes it."""
    import json

    from rhmdiff import tasks, workdir as workdir_lib
    from rhmdiff.files import as_path
    workdir = as_path(workdir)
    task = json.loads((workdir / workdir_lib.CONFIG).read_text())["task"]
    found = []
    for entry in sorted(workdir.iterdir()):
        if entry.name in (workdir_lib.CONFIG, workdir_lib.MARKER, workdir_lib.LOCK, workdir_lib.CACHE):
            continue
        if entry.is_dir() and (entry / workdir_lib.MARKER).exists():
            found += [f"{entry.name}/{name}" for name in undeclared_outputs(entry)]
        elif not tasks.declares(task, entry.name):
            found.append(entry.name)
    return found


def execute(config, workdir, check: bool = False, user_files: bool = False) -> tuple[int, str]:
    """What ``python -m rhmdiff.main`` does after parsing its flags, in this process:
    ``(exit code, stderr)`` (for the refusals that end before any compute). A run that
    succeeds must have written only outputs its task declares (``user_files``: the test put
    files of its own there)."""
    import contextlib
    import io

    from rhmdiff import main as cli
    err, code = io.StringIO(), 0
    with contextlib.redirect_stderr(err):
        try:
            cli.execute(config, str(workdir), check)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    if code == 0 and not check and not user_files:
        assert not undeclared_outputs(workdir), undeclared_outputs(workdir)
    return code, err.getvalue()


def run_task(config, workdir, **kwargs):
    """What ``rhmdiff.main`` does after parsing, in process: validate, claim, run (and check
    that the run wrote only declared outputs)."""
    from rhmdiff import tasks, workdir as workdir_lib
    task = tasks.load(config.task)
    task.validate(config)
    with workdir_lib.claim(config, str(workdir), task.MUTABLE) as claim:
        out = task.run(config, claim.path, **kwargs)
    assert not undeclared_outputs(workdir), undeclared_outputs(workdir)
    return out


@pytest.fixture
def fake_gcs(tmp_path, monkeypatch):
    """``gs://`` URLs served from a local directory: an fsspec filesystem for epath (every
    workdir, results and metrics file) and orbax's tensorstore arrays sent to the same place
    (the two stand-ins for Google Cloud Storage this machine cannot reach)."""
    import fsspec
    from etils.epath import backend
    from fsspec.implementations.local import LocalFileSystem
    from orbax.checkpoint._src.path import gcs_utils
    from orbax.checkpoint._src.serialization import tensorstore_utils

    root = str(tmp_path / "gcs")
    os.makedirs(root)

    class FakeGCS(LocalFileSystem):
        protocol = ("gs", "gcs")

        def __init__(self, *args, finalize_on_close=None, **kwargs):
            super().__init__(*args, **kwargs)

        @classmethod
        def _strip_protocol(cls, path):
            path = fsspec.utils.stringify_path(path)
            path = path[len("gs://"):] if path.startswith("gs://") else path
            return (path if path.startswith(root) else os.path.join(root, path)).rstrip("/")

        def glob(self, path, **kwargs):
            return [p[len(root) + 1:] for p in super().glob(path, **kwargs)]

    previous = {p: fsspec.registry.get(p) for p in FakeGCS.protocol}
    for p in FakeGCS.protocol:
        fsspec.register_implementation(p, FakeGCS, clobber=True)
    backend.fsspec_backend._get_filesystem.cache_clear()
    monkeypatch.setattr(gcs_utils, "is_hierarchical_namespace_enabled", lambda *a, **k: False)
    monkeypatch.setattr(tensorstore_utils.gcs_utils, "get_kvstore_for_gcs",
                        lambda path: {"driver": "file", "path": os.path.join(root, path[len("gs://"):])})
    yield root
    for p, impl in previous.items():
        fsspec.register_implementation(p, impl or FakeGCS, clobber=True)
    backend.fsspec_backend._get_filesystem.cache_clear()


@pytest.fixture
def no_gcsfs(monkeypatch):
    """``gs://`` as on a machine without gcsfs (the ``gcs`` extra), installed here or not."""
    import importlib
    import sys
    registry = importlib.import_module("fsspec.registry")
    for scheme in ("gs", "gcs"):
        monkeypatch.delitem(registry._registry, scheme, raising=False)
    monkeypatch.setitem(sys.modules, "gcsfs", None)  # import gcsfs raises ImportError


@pytest.fixture(scope="session")
def inputs(tmp_path_factory):
    """Small stand-ins for the inputs that configs name: a corpus and its BPE file, image
    batches, and the workdirs of an md4 and a ddpm run (their config.json only)."""
    import json

    from rhmdiff.data import demo_text, images
    root = tmp_path_factory.mktemp("inputs")
    docs = demo_text.write_corpus(str(root / "corpus"), 12, seed=0)
    demo_text.write_tokenizer([open(p).read() for p in docs], str(root / "bpe.tiktoken"), num_words=40)
    images.write_npz_batch(images.demo_images(8, 64, seed=0), str(root / "images" / "train" / "t.npz"))
    images.write_npz_batch(images.demo_images(8, 64, seed=1), str(root / "images" / "val" / "v.npz"))
    out = {"corpus": str(root / "corpus"), "tokenizer": str(root / "bpe.tiktoken"),
           "images": str(root / "images" / "train"), "val_images": str(root / "images" / "val")}
    for task, name in (("md4", "md4_owt"), ("ddpm", "ddpm_imagenet64")):
        run = root / f"{task}_run"
        run.mkdir()
        (run / "config.json").write_text(json.dumps(load_config(name).to_dict()))
        (run / ".rhmdiff").write_text("{}")
        out[f"{task}_run"] = str(run)
    return out


def with_inputs(config, inputs):
    """``config`` with every input path pointed at the :func:`inputs` stand-ins."""
    if config.task == "md4":
        config.data.update(path=inputs["corpus"], tokenizer_path=inputs["tokenizer"])
    elif config.task == "ddpm":
        config.data.update(path=inputs["images"], val_path=inputs["val_images"])
    elif config.task == "text_analysis":
        config.analysis.run_dir = inputs["md4_run"]
    elif config.task == "ddpm_mmd":
        config.analysis.run_dir = inputs["ddpm_run"]
    return config


def enumerate_language(g):
    """Every sequence of the grammar with its latents, by explicit recursion in Python
    (independent of rhm.sample / decode): list of (tokens tuple, [level-1 .. level-L tuples])."""
    rules = np.asarray(g.rules)

    def expand(symbol, level):
        """All (leaves, latents-by-level) below one level-`level` symbol."""
        if level == 0:
            return [((symbol,), [])]
        out = []
        for j in range(g.m):
            parts = [expand(int(c), level - 1) for c in rules[level - 1, symbol, j]]
            for combo in itertools.product(*parts):
                leaves = sum((c[0] for c in combo), ())
                lat = [sum((c[1][k] for c in combo), ()) for k in range(level - 1)]
                out.append((leaves, lat + [(symbol,)]))
        return out

    return [e for root in range(g.v) for e in expand(root, g.L)]


def brute_valid(g, tokens):
    """Validity of one token tuple by the definition: every s-tuple must be a production,
    level by level (dictionary of productions built in Python)."""
    rules = np.asarray(g.rules)
    h = list(tokens)
    for level in range(1, g.L + 1):
        table = {tuple(rules[level - 1, a, j]): a for a in range(g.v) for j in range(g.m)}
        parents = [table.get(tuple(h[i:i + g.s]), -1) if -1 not in h[i:i + g.s] else -1
                   for i in range(0, len(h), g.s)]
        h = parents
    return h[0] >= 0


@pytest.fixture(params=TINY, ids=lambda p: "v{}m{}s{}L{}".format(*p))
def tiny(request):
    v, m, s, L = request.param
    g = rhm.make_grammar(jax.random.PRNGKey(v * 100 + s), v, m, s, L)
    return g, enumerate_language(g)
