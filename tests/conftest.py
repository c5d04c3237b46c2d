import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import course  # noqa: E402

course.configure()  # the notebooks' PRNG and compilation cache: tests see the numbers the notebooks see
