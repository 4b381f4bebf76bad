"""Root pytest configuration: applies to the unit tests and to the notebooks alike.

Notebook kernels started by nbval inherit this process's environment, so setting the
profile here makes every notebook run the quick profile under pytest (``kdbook.settings``
also returns ``quick`` whenever it runs inside pytest).
"""

import os

os.environ["KDBOOK_PROFILE"] = "quick"
