"""Tests leave the user's compilation cache alone: ``optlab`` commands run in-process or as
subprocesses get ``OPTLAB_JAX_CACHE=off`` unless a test sets its own folder
(tests/experiments/test_compile_cache.py checks the cache itself)."""

import os

os.environ["OPTLAB_JAX_CACHE"] = "off"
