"""The study: run configurations become run folders. ``profiles`` (the plans), ``runfiles`` (a run's
identity and files), ``run`` (``run_one``, what a notebook calls), ``notebooks`` (papermill execution),
``sweep`` (a profile on Dask) and ``bench`` (speed). The driver modules import no TensorFlow."""
