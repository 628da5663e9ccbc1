"""``optlab serve``: the continual run folder's registry behind a real HTTP service.

An ASGI app (Starlette under uvicorn) answers ``/predict`` with the stable or the canary
model version (a user's hash decides), stores ``/feedback`` durably in the run's SQLite
registry before answering, validates it in batches like the continual stream, rolls a new
version out 5 → 25 → 50 → 100 % with the exact McNemar test gating each step (and rolls a
worse one back), retrains in a separate worker process on a trigger, and exports Prometheus
metrics. ``GET /`` is a page to draw digits on; ``GET /dashboard`` shows the rollout.

Modules: :mod:`.inputs` (request bodies → model inputs), :mod:`.model` (compiled versions,
micro-batching), :mod:`.store` (serving tables beside the registry), :mod:`.rollout` (routing
and the stage gates), :mod:`.retrain` (the worker process), :mod:`.app` (the service),
:mod:`.pages` (HTML), :mod:`.cli` (the command line). See docs/continual.md, "Serving".
"""
