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
# order collected (``--no-loadscope-reorder``): pytest-xdist gives the first file to worker
# 1, the second to worker 2, queues the third and fourth behind them, and then hands each
# next file to whichever worker runs short. The order, measured with ``--durations``:
# - the longest notebook first (its training runs take most of the suite);
# - on worker 2, two files that read no data (the site's browser test, the student copies:
#   about 70 s), while worker 1 decodes CIFAR-10 and computes the book teacher's outputs
#   once; started together, both workers decoded and computed the same files at the same
#   time;
# - then the other long notebooks, so that at the end the short files fill the gaps
#   instead of one worker finishing a long notebook alone.
RUN_FIRST = ("book/variants.ipynb", "tests/test_site.py", "book/formulation.ipynb", "tests/test_student.py",
             "book/hyperparameters.ipynb", "book/beyond_hinton.ipynb", "book/little_labels.ipynb",
             "book/distilling.ipynb")


def _run_order(item) -> int:
    path = item.nodeid.split("::")[0]  # the file, relative to the repository root
    return RUN_FIRST.index(path) if path in RUN_FIRST else len(RUN_FIRST)


def pytest_collection_modifyitems(config, items):
    items.sort(key=_run_order)  # stable: a notebook's cells, and the test files, keep their order
