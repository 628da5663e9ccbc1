"""First-order optimizers as pure ``optax.GradientTransformation`` init/update pairs.

Each family lives in one small module whose ``scale_by_*`` blocks hold the math; the
public factories chain a block with ``optax.scale_by_learning_rate`` the way Optax's
aliases do, and match Optax 0.2.8 update for update.

    from optlab import optimizers as opt
    tx = opt.adam(1e-3)                  # or opt.get("adam", learning_rate=1e-3)
"""

from optlab.optimizers.acprop import acprop, scale_by_acprop
from optlab.optimizers.adabelief import adabelief, scale_by_belief
from optlab.optimizers.adadelta import (
    ScaleByAdaDeltaState,
    adadelta,
    adadelta_paper,
    scale_by_adadelta,
)
from optlab.optimizers.adagrad import ScaleByRssState, adagrad, adagrad_paper, scale_by_rss
from optlab.optimizers.adam import (
    ScaleByAdamState,
    ScaleByAmsgradState,
    ScaleByNadamState,
    adam,
    adam_efficient,
    adamax,
    adamax_paper,
    adamaxw,
    adamw,
    amsgrad,
    amsgrad_paper,
    nadam,
    nadam_paper,
    nadamw,
    radam,
    scale_by_adam,
    scale_by_adam_efficient,
    scale_by_adamax,
    scale_by_amsgrad,
    scale_by_nadam_paper,
    scale_by_radam,
)
from optlab.optimizers.adan import ScaleByAdanState, adan, scale_by_adan
from optlab.optimizers.ademamix import (
    ScaleByAdemamixState,
    ScaleBySimplifiedAdemamixState,
    ademamix,
    ademamix_alpha_schedule,
    ademamix_b3_schedule,
    scale_by_ademamix,
    scale_by_simplified_ademamix,
    simplified_ademamix,
)
from optlab.optimizers.adopt import adopt, scale_by_adopt
from optlab.optimizers.factored import (
    ScaleByFactoredRmsState,
    ScaleBySM3State,
    adafactor,
    scale_by_factored_rms,
    scale_by_sm3,
    sm3,
)
from optlab.optimizers.galore import (
    GaLoreDimensionNumbers,
    ScaleByGaloreState,
    galore,
    scale_by_galore,
)
from optlab.optimizers.lamb import fromage, lamb, lars, scale_by_trust_ratio
from optlab.optimizers.lbfgs import ScaleByLbfgsState, lbfgs, scale_by_lbfgs
from optlab.optimizers.lion import ScaleByLionState, lion, scale_by_lion
from optlab.optimizers.madgrad import (
    ScaleByMadgradState,
    madgrad,
    madgrad_paper,
    scale_by_madgrad,
)
from optlab.optimizers.momo import ScaleByMomoAdamState, ScaleByMomoState, momo, momo_adam
from optlab.optimizers.muon import (
    ScaleByMuonState,
    muon,
    orthogonalize,
    scale_by_muon,
    scale_by_shape,
)
from optlab.optimizers.noisy import AddNoiseState, add_noise, noisy_sgd
from optlab.optimizers.novograd import ScaleByNovogradState, novograd, scale_by_novograd
from optlab.optimizers.optimistic import (
    ScaleByOptimisticGradientState,
    optimistic_adam,
    optimistic_adam_v2,
    optimistic_gradient_descent,
    scale_by_optimistic_gradient,
)
from optlab.optimizers.parameter_free import (
    ScaleByCocobState,
    ScaleByDadaptAdamwState,
    ScaleByDogState,
    ScaleByDowgState,
    cocob,
    dadapt_adamw,
    dog,
    dowg,
    scale_by_cocob,
    scale_by_dog,
    scale_by_dowg,
)
from optlab.optimizers.polyak import polyak_sgd, scale_by_polyak
from optlab.optimizers.prodigy import ScaleByProdigyState, prodigy
from optlab.optimizers.registry import (
    OptimizerInfo,
    available,
    get,
    get_factory,
    info,
    load_factory,
    register,
    resolve,
)
from optlab.optimizers.rmsprop import ScaleByRmsState, rmsprop, scale_by_rms
from optlab.optimizers.rprop import ScaleByRpropState, rprop, scale_by_rprop
from optlab.optimizers.schedule_free import (
    ScheduleFreeState,
    eval_params,
    schedule_free,
    schedule_free_adamw,
    schedule_free_eval_params,
    schedule_free_sgd,
)
from optlab.optimizers.sgd import (
    ScaleByEwmaState,
    ScaleByMomentumState,
    heavy_ball,
    nesterov,
    scale_by_ewma,
    scale_by_momentum,
    sgd,
    sgdm,
)
from optlab.optimizers.sign import scale_by_sign, sign_sgd, signum
from optlab.optimizers.yogi import scale_by_yogi, yogi

__all__ = [
    # Optax's contrib: MADGRAD, ACProp, learning-rate-free methods, MoMo, GaLore
    "GaLoreDimensionNumbers",
    "ScaleByCocobState",
    "ScaleByDadaptAdamwState",
    "ScaleByDogState",
    "ScaleByDowgState",
    "ScaleByGaloreState",
    "ScaleByMadgradState",
    "ScaleByMomoAdamState",
    "ScaleByMomoState",
    "acprop",
    "cocob",
    "dadapt_adamw",
    "dog",
    "dowg",
    "galore",
    "madgrad",
    "madgrad_paper",
    "momo",
    "momo_adam",
    "scale_by_acprop",
    "scale_by_cocob",
    "scale_by_dog",
    "scale_by_dowg",
    "scale_by_galore",
    "scale_by_madgrad",
    "OptimizerInfo",
    "ScaleByAdaDeltaState",
    "ScaleByAdamState",
    "ScaleByAdemamixState",
    "ScaleBySimplifiedAdemamixState",
    "ScaleByAmsgradState",
    "ScaleByEwmaState",
    "ScaleByLionState",
    "ScaleByMuonState",
    "ScaleByMomentumState",
    "ScaleByNadamState",
    "ScaleByProdigyState",
    "ScaleByRmsState",
    "ScaleByRssState",
    "ScheduleFreeState",
    "adabelief",
    "adadelta",
    "adadelta_paper",
    "adagrad",
    "adagrad_paper",
    "adam",
    "adam_efficient",
    "ademamix",
    "ademamix_alpha_schedule",
    "ademamix_b3_schedule",
    "adopt",
    "adamax",
    "adamax_paper",
    "adamw",
    "amsgrad",
    "amsgrad_paper",
    "available",
    "eval_params",
    "get",
    "get_factory",
    "heavy_ball",
    "info",
    "load_factory",
    "register",
    "resolve",
    "lamb",
    "lion",
    "muon",
    "orthogonalize",
    "nadam",
    "nadam_paper",
    "nesterov",
    "prodigy",
    "radam",
    "rmsprop",
    "scale_by_adadelta",
    "scale_by_adam",
    "scale_by_adam_efficient",
    "scale_by_ademamix",
    "scale_by_simplified_ademamix",
    "scale_by_adopt",
    "scale_by_adamax",
    "scale_by_amsgrad",
    "scale_by_belief",
    "scale_by_ewma",
    "scale_by_lion",
    "scale_by_muon",
    "scale_by_shape",
    "scale_by_momentum",
    "scale_by_nadam_paper",
    "scale_by_radam",
    "scale_by_rms",
    "scale_by_rss",
    "schedule_free",
    "schedule_free_adamw",
    "schedule_free_eval_params",
    "schedule_free_sgd",
    "scale_by_trust_ratio",
    "sgd",
    "sgdm",
    "simplified_ademamix",
    # Optax's other main-namespace optimizers
    "AddNoiseState",
    "ScaleByAdanState",
    "ScaleByNovogradState",
    "ScaleByOptimisticGradientState",
    "ScaleByRpropState",
    "adamaxw",
    "adan",
    "add_noise",
    "fromage",
    "lars",
    "nadamw",
    "noisy_sgd",
    "novograd",
    "optimistic_adam",
    "optimistic_adam_v2",
    "optimistic_gradient_descent",
    "polyak_sgd",
    "sm3",
    "lbfgs",
    "ScaleByLbfgsState",
    "scale_by_lbfgs",
    "adafactor",
    "ScaleByFactoredRmsState",
    "ScaleBySM3State",
    "scale_by_factored_rms",
    "scale_by_sm3",
    "rprop",
    "scale_by_adan",
    "scale_by_novograd",
    "scale_by_optimistic_gradient",
    "scale_by_polyak",
    "scale_by_rprop",
    "scale_by_sign",
    "scale_by_yogi",
    "sign_sgd",
    "signum",
    "yogi",
]
