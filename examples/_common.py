"""Plumbing shared by the example scripts; the lessons themselves stay in each script.

Import it before NumPy: it limits BLAS to one thread first, makes `tinygrad_seq`
importable from a source checkout, and provides the optional extras (tqdm, matplotlib)
with graceful fallbacks.
"""
import argparse
import json
import os
import sys
from pathlib import Path

# The engine's matmuls are small: BLAS threads cost more than they save, and on a busy
# machine they can make each call 100x slower. Set before NumPy loads; override freely.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

try:
    import tinygrad_seq as tg
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import tinygrad_seq as tg

try:
    from tqdm import tqdm
except ImportError:  # tqdm is optional (the "examples" extra): a plain loop without a bar
    class tqdm:
        def __init__(self, iterable, **kwargs):
            self.iterable = iterable

        def __iter__(self):
            return iter(self.iterable)

        def set_postfix(self, *args, **kwargs):
            pass

        def close(self):
            pass

        write = staticmethod(print)


def seeded_rng(seed):
    """Seed the engine's generator and return a NumPy Generator seeded the same way."""
    tg.manual_seed(seed)
    return np.random.default_rng(seed)


def make_parser(doc):
    """An argument parser described by the first paragraph of the script's docstring."""
    return argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def parse_with_quick(parser, argv, quick):
    """Add --quick and parse `argv`; --quick makes `quick` the defaults (explicit flags still win)."""
    parser.add_argument("--quick", action="store_true", help="tiny settings that run in seconds (smoke test)")
    known, _ = parser.parse_known_args(argv)
    if known.quick:
        parser.set_defaults(**quick)
    return parser.parse_args(argv)


def load_pyplot(skipping="the plot"):
    """matplotlib.pyplot on the Agg backend, or None (saying so) when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed: skipping {skipping} (pip install -e '.[examples]')")
        return None
    return plt


def save_figure(fig, path, dpi):
    """Lay out `fig`, write it to `path` (creating the folder) and close it; returns `path`."""
    import matplotlib.pyplot as plt  # already loaded: the figure came from load_pyplot()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def write_metrics(out_dir, metrics):
    """Write `metrics` as out_dir/metrics.json (creating the folder)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics))
