"""Write the grammar that a config draws to a rules file (``config.rhm.rules_file``):

    python -m rhmdiff.rhm_rules --config=configs/rhm_L3.py[:preset] --out=rules.npy [--config.rhm.seed=3]

The file holds ``rules int32[L, v, m, s]`` in the layout of :class:`rhmdiff.rhm.Grammar`
(:func:`rhmdiff.rhm.save_rules`); a run with ``--config.rhm.rules_file=rules.npy`` trains on
exactly this grammar, and another code can read (or write) the same file.
"""
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/X.py[:preset]) with a config.rhm.",
                                          lock_config=True)
_OUT = flags.DEFINE_string("out", None, "The .npy file to write.")


def main(argv):
    from rhmdiff import config_check, from_config, rhm
    if len(argv) > 1 or _CONFIG.value is None or not _OUT.value:
        print("rhmdiff: error: usage: python -m rhmdiff.rhm_rules --config=FILE[:preset] --out=FILE.npy",
              file=sys.stderr)
        return 2
    config = _CONFIG.value
    try:
        config_check.grammar(config)
    except ValueError as e:
        print(f"rhmdiff: error: {e}".splitlines()[0], file=sys.stderr)
        return 2
    g = from_config.grammar(config)
    rhm.save_rules(_OUT.value, g)
    print(f"wrote the rules of (v, m, s, L) = {(g.v, g.m, g.s, g.L)} to {_OUT.value}")
    return 0


if __name__ == "__main__":
    app.run(main)
