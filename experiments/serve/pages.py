"""The two HTML pages, ``draw.html`` and ``dashboard.html`` beside this module (no external
scripts: the service works offline).

* :data:`DRAW` (``GET /``): draw a digit with the mouse or a finger on a 280 × 280 canvas;
  "Predict" shrinks it to 28 × 28 (the browser's ``drawImage``), posts it to ``/predict``
  and shows the digit, its probability and the model version; a correction (the digit it
  really is) posts the same image to ``/feedback``. The user id is random and kept in
  ``localStorage``, so one person keeps seeing one version within a rollout stage.
* :data:`DASHBOARD` (``GET /dashboard``): the model versions, the rollout stage and its
  decisions, and each version's accuracy on feedback over time, from ``/api/status``
  (refreshed every 2 s).
"""

from importlib import resources

DRAW = resources.files(__package__).joinpath("draw.html").read_text(encoding="utf-8")
DASHBOARD = resources.files(__package__).joinpath("dashboard.html").read_text(encoding="utf-8")
