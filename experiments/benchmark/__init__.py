"""``optlab benchmark``: the DeepOBS protocol (Schneider, Balles & Hennig, ICLR 2019), with
every learning-rate grid trained as one vmapped population.

Modules: ``problems`` (the test problems), ``protocol`` (tune, choose, re-run, measure),
``profiles`` (Dolan–Moré performance profiles), ``baselines`` (DeepOBS's published
numbers and the verdict rule), ``output`` (the run folder), ``cli`` (the command).
"""
