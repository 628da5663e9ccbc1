"""The 23 claims of the course notes (reports 000–002, notebook 003, thesis 004), as listed in
``../shared/reference/claims.md``: each a hypothesis with an id, the optimizer it is about,
its wording and its source."""

from __future__ import annotations

from typing import NamedTuple


class Claim(NamedTuple):
    id: str
    optimizer: str
    text: str
    source: str


CLAIMS: tuple[Claim, ...] = (
    Claim("C1", "batch GD", "applies to most deep-learning methods (it trains everything the "
          "others train)", "000 Table 1"),
    Claim("C2", "batch GD", "on a very large data set each gradient is expensive: cost (time "
          "and memory) grows with the data set size", "000 Table 1, §1.1"),
    Claim("C3", "SGD", "handles very large data sets with small per-step cost",
          "000/001 Table 1"),
    Claim("C4", "SGD", "needs many iterations: its loss oscillates and it converges (reaches "
          "a minimum) slowly", "000/001 Table 1, §1.2"),
    Claim("C5", "SGD", "its noise lets it escape local minima", "003"),
    Claim("C6", "SGD with momentum", "converges much faster than SGD", "000 §1.3, Figure 2"),
    Claim("C7", "SGD with momentum", "raising momentum and learning rate without limit does "
          "not keep speeding it up: it overshoots the minimum; with high momentum lower the "
          "learning rate", "000 §1.3"),
    Claim("C8", "mini-batch GD", "has the advantages of both batch GD and SGD",
          "000 Table 1"),
    Claim("C9", "mini-batch GD", "the batch size must be tuned per problem: 32 is typical, "
          "but some problems get very poor accuracy at 32", "000 §1.4"),
    Claim("C10", "Adagrad", "adapts a per-parameter learning rate, so the rate needs no "
          "manual tuning", "000/001 §Adagrad"),
    Claim("C11", "Adagrad", "converges faster than gradient descent", "000/001 Table 1"),
    Claim("C12", "Adagrad", "its effective learning rate shrinks markedly, because it "
          "accumulates every past squared gradient", "000/001 Table 1"),
    Claim("C13", "RMSProp", "fixes Adagrad's shrinking rate with an exponentially weighted "
          "moving average", "000/001 Table 1"),
    Claim("C14", "RMSProp", "its decay β must be chosen per problem: too large slows "
          "convergence, too small makes it noisy and unstable", "001 §RMSProp"),
    Claim("C15", "RMSProp, Adam", "memory runs short on very large data sets / models (they "
          "store per-parameter state)", "001 Table 1"),
    Claim("C16", "Adam", "processing time is fast (converges quickly)", "000/001 Table 1"),
    Claim("C17", "Adam", "does not use much memory", "000 Table 1 (contradicted by C15 in 001: "
          "decide by measurement)"),
    Claim("C18", "Adam", "needs less manual tuning than other optimizers: less sensitive to "
          "its hyperparameters", "000/001 Table 1, §Adam"),
    Claim("C19", "Adam", "generalises worse than SGD", "000/001 Table 1, §Adam"),
    Claim("C20", "Adam", "its momentum helps it avoid getting stuck in local minima",
          "001 §Adam"),
    Claim("C21", "all first-order", "slow training is caused mostly by saddle points "
          "surrounded by plateaus, not by local minima", "004 §1 (after Dauphin et al. 2014)"),
    Claim("C22", "Adam", "works on aligned and on rotated (non-axis-aligned) error surfaces "
          "alike; diagonal methods lose their edge when the surface is rotated", "004 §4.2.2"),
    Claim("C23", "Adam", "robust to noisy and to redundant training data", "004 §4.2.3"),
)  # fmt: skip

BY_ID = {claim.id: claim for claim in CLAIMS}
