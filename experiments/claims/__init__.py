"""``optlab claims``: a verdict for every claim of the course notes.

:mod:`~experiments.claims.catalogue` lists the claims (C1–C23),
:mod:`~experiments.claims.experiments` the experiments the studies lack,
:mod:`~experiments.claims.rules` the rule that turns each claim's measured figures into a
verdict, :mod:`~experiments.claims.ledger` runs everything and writes the ledger, and
:mod:`experiments.commands.claims` is the command line.
"""
