"""Reproductions of published optimizer papers: ``optlab adam-paper``, ``optlab adadelta-paper``.

* :mod:`experiments.papers.adam`: Kingma & Ba 2015, Figs. 1, 2a, 2b, 3, 4 and AdaMax.
* :mod:`experiments.papers.adadelta`: Zeiler 2012, Tables 1–2 and Fig. 1.
* :mod:`experiments.papers._published`: the papers' numbers, as data, with their source.
* :mod:`experiments.papers._common`: the protocol (grid population → chosen configuration →
  seeds), the comparison tables, plots and verdicts.
* :mod:`experiments.papers.bias_correction`: Adam with switchable bias correction (Fig. 4;
  the VAE trains on the engine with ``engine.NegativeELBO``).
"""
