"""Model tests are dominated by XLA compile time (tiny models, many shapes), so they run
with `jax_disable_most_optimizations`, which JAX documents for exactly this case. The flag
is restored and the compiled executables dropped after this package's tests, so nothing
compiled without optimisation reaches other tests."""

import jax
import pytest


@pytest.fixture(autouse=True, scope="package")
def _compile_fast():
    previous = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)
    jax.clear_caches()
