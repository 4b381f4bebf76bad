"""Root pytest configuration: applies to the unit tests and to the notebooks alike.

Notebook kernels started by nbval inherit this process's environment, so what is set
here holds for the notebooks too: the quick profile (whatever the caller's
``KDBOOK_PROFILE``, so the suite never starts a full run) and no widgets (a headless
kernel has no frontend to draw them).
"""

import os

os.environ["KDBOOK_PROFILE"] = "quick"
os.environ["KDBOOK_WIDGETS"] = "0"
