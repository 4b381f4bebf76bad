"""Root pytest configuration: applies to the unit tests and to the notebooks alike.

Notebook kernels started by nbval inherit this process's environment, so what is set
here holds for the notebooks too: the quick profile (whatever the caller's
``KDBOOK_PROFILE``, so the suite never starts a full run) and no widgets (a headless
kernel has no frontend to draw them).
"""

import os

os.environ["KDBOOK_PROFILE"] = "quick"
os.environ["KDBOOK_WIDGETS"] = "0"

# Under pytest-xdist (pyproject.toml's addopts start two workers) every worker and the
# notebook kernels it starts compute on one thread: two single-threaded processes keep two
# cores busier than one process with two threads, most of whose work (Python, sympy, small
# convolutions) does not split across threads.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


# Each test file runs whole on one worker (``--dist loadfile``), the files handed out in the
# order collected (``--no-loadscope-reorder``). The longest notebooks go first (measured with
# ``--durations``: their training runs take most of the suite), so that at the end the short
# files fill the gaps instead of one worker finishing a long notebook alone.
SLOWEST_NOTEBOOKS = ("variants", "hyperparameters", "formulation", "beyond_hinton", "little_labels", "distilling")


def _run_order(item) -> tuple[int, int]:
    if item.path.suffix != ".ipynb":
        return (1, 0)
    stem = item.path.stem
    return (0, SLOWEST_NOTEBOOKS.index(stem) if stem in SLOWEST_NOTEBOOKS else len(SLOWEST_NOTEBOOKS))


def pytest_collection_modifyitems(config, items):
    items.sort(key=_run_order)  # stable: a notebook's cells, and the test files, keep their order
