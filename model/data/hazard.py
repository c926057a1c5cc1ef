r"""The documented survival hazard of the generated cohorts (overall and progression-free survival).

Event times follow a Weibull proportional-hazards model (Bender, Augustin & Blettner 2005,
"Generating survival times to simulate Cox proportional hazards models", Stat Med 24:1713):

.. math::

    h(t \mid x) = \frac{\rho}{\lambda_c}\Big(\frac{t}{\lambda_c}\Big)^{\rho-1} \exp(\eta(x)),
    \qquad T = \lambda_c \Big(\frac{E}{\exp \eta(x)}\Big)^{1/\rho},\ E \sim \mathrm{Exp}(1)

with shape :math:`\rho` = :data:`WEIBULL_SHAPE` and a cohort/endpoint scale :math:`\lambda_c`
(:data:`BASELINE_SCALE_MONTHS`, months). The linear predictor is

.. math::

    \eta = 0.25\,\frac{age-60}{10} + \beta_{stage} + 0.15\,[former] + 0.35\,[current]
         - 0.10\,[EGFR+] + 0.20\,[TKI] - 0.90\,[EGFR+ \wedge TKI] - 0.70\,[IDH\text{-}mutant]
         + 0.30\,(size_{cm} - 4) + 1.50\,growth

:math:`\beta_{stage}` = 0, 0.4, 0.8, 1.3 for stage I..IV. The two **imaging biomarkers** are
``size_cm``, the summed longest diameter (cm) of the lesions at the first visit, and ``growth``,
the lesions' log growth rate per 3 months (what the log ratio of the summed diameters of the
first two visits measures, divided by the interval in units of 3 months). They are zero for the
``general`` cohort, whose outcome depends on clinical covariates only. All coefficients are in
:data:`HAZARD_COEFFICIENTS` and written to ``generator.json``.

Censoring is independent of the event time: administrative censoring at the end of follow-up,
uniform on :data:`ADMIN_CENSOR_MONTHS` after the first visit (staggered accrual), plus random
drop-out, exponential with mean :data:`DROPOUT_MEAN_MONTHS`. Progression-free survival (defined
for ``lung_tki`` only) uses the same linear predictor with its own scale; death before
progression counts as a PFS event (RECIST convention).
"""

from __future__ import annotations

import math
from typing import Any, Protocol

__all__ = [
    "ADMIN_CENSOR_MONTHS",
    "BASELINE_SCALE_MONTHS",
    "DROPOUT_MEAN_MONTHS",
    "HAZARD_COEFFICIENTS",
    "STAGE_EFFECT",
    "WEIBULL_SHAPE",
    "RandomSource",
    "hazard_spec",
    "linear_predictor",
    "sample_outcomes",
]

WEIBULL_SHAPE = 1.4
#: Log hazard ratios of the linear predictor (see the module docstring for the covariates).
HAZARD_COEFFICIENTS: dict[str, float] = {
    "age_per_decade_over_60": 0.25,
    "smoking_former": 0.15,
    "smoking_current": 0.35,
    "egfr_positive": -0.10,
    "tki": 0.20,
    "egfr_positive_x_tki": -0.90,
    "idh_mutant": -0.70,
    "size_cm_over_4": 0.30,
    "growth_log_per_3_months": 1.50,
}
STAGE_EFFECT: dict[str, float] = {"I": 0.0, "II": 0.4, "III": 0.8, "IV": 1.3}
#: Weibull scale (months) per cohort and endpoint; ``pfs`` only where PFS is defined.
BASELINE_SCALE_MONTHS: dict[str, dict[str, float]] = {
    "lung_tki": {"os": 34.0, "pfs": 13.0},
    "nsclc": {"os": 30.0},
    "gbm": {"os": 22.0},
    "general": {"os": 220.0},
}
ADMIN_CENSOR_MONTHS = (24.0, 72.0)
DROPOUT_MEAN_MONTHS = 150.0


def linear_predictor(
    *,
    age: float,
    tnm_stage: str,
    smoking: str,
    mutation: str,
    treatment: str,
    size_cm: float,
    growth: float,
) -> float:
    """The Cox linear predictor :math:`\\eta` of the module docstring.

    Args:
        age: years.
        tnm_stage: ``I`` .. ``IV``.
        smoking: ``never``, ``former`` or ``current``.
        mutation: e.g. ``EGFR+``, ``EGFR-``, ``IDH-mutant``, ``IDH-wildtype``, ``none``.
        treatment: e.g. ``TKI``, ``chemo``, ``radiotherapy``, ``surgery``, ``none``.
        size_cm: summed baseline lesion diameter in cm (0 where imaging does not enter).
        growth: log growth rate of the lesions per 3 months (0 where imaging does not enter).
            With ``size_cm == 0`` imaging is treated as absent and ``size_cm - 4`` is not used.

    Raises:
        ValueError: unknown stage or smoking status.
    """
    if tnm_stage not in STAGE_EFFECT:
        raise ValueError(f"tnm_stage must be one of {list(STAGE_EFFECT)}, got {tnm_stage!r}")
    if smoking not in ("never", "former", "current"):
        raise ValueError(f"smoking must be never/former/current, got {smoking!r}")
    c = HAZARD_COEFFICIENTS
    egfr, tki = mutation == "EGFR+", treatment == "TKI"
    eta = c["age_per_decade_over_60"] * (age - 60.0) / 10.0 + STAGE_EFFECT[tnm_stage]
    eta += c["smoking_former"] * (smoking == "former") + c["smoking_current"] * (smoking == "current")
    eta += c["egfr_positive"] * egfr + c["tki"] * tki + c["egfr_positive_x_tki"] * (egfr and tki)
    eta += c["idh_mutant"] * (mutation == "IDH-mutant")
    if size_cm > 0:
        eta += c["size_cm_over_4"] * (size_cm - 4.0) + c["growth_log_per_3_months"] * growth
    return float(eta)


class RandomSource(Protocol):
    """The draws :func:`sample_outcomes` needs; ``numpy.random.Generator`` provides them."""

    def standard_exponential(self) -> float: ...

    def uniform(self, low: float, high: float) -> float: ...

    def exponential(self, scale: float) -> float: ...


def _weibull_time(rng: RandomSource, eta: float, scale: float) -> float:
    return scale * (rng.standard_exponential() / math.exp(eta)) ** (1.0 / WEIBULL_SHAPE)


def sample_outcomes(rng: RandomSource, *, cohort: str, eta: float) -> dict[str, Any]:
    """Draw observed OS (and PFS where defined) with independent censoring.

    Args:
        rng: a random stream, e.g. ``numpy.random.default_rng(0)`` (consumes four draws).
        cohort: a key of :data:`BASELINE_SCALE_MONTHS`.
        eta: the linear predictor from :func:`linear_predictor`.

    Returns:
        ``os_months``, ``os_event`` and ``pfs_months``/``pfs_event`` (``None`` without PFS);
        months rounded to 0.1, events 1 (observed) or 0 (censored).

    Raises:
        ValueError: unknown cohort.
    """
    if cohort not in BASELINE_SCALE_MONTHS:
        raise ValueError(f"cohort must be one of {list(BASELINE_SCALE_MONTHS)}, got {cohort!r}")
    scales = BASELINE_SCALE_MONTHS[cohort]
    t_os = _weibull_time(rng, eta, scales["os"])
    t_pfs = _weibull_time(rng, eta, scales.get("pfs", scales["os"]))
    censor = min(rng.uniform(*ADMIN_CENSOR_MONTHS), rng.exponential(DROPOUT_MEAN_MONTHS))
    out: dict[str, Any] = {
        "os_months": round(max(min(t_os, censor), 0.1), 1),
        "os_event": int(t_os <= censor),
        "pfs_months": None,
        "pfs_event": None,
    }
    if "pfs" in scales:
        t_prog = min(t_pfs, t_os)
        out["pfs_months"] = round(max(min(t_prog, censor), 0.1), 1)
        out["pfs_event"] = int(t_prog <= censor)
    return out


def hazard_spec() -> dict[str, Any]:
    """The hazard's parameters as plain JSON-ready data (written to ``generator.json``)."""
    return {
        "model": "Weibull proportional hazards, T = scale * (E / exp(eta)) ** (1 / shape), E ~ Exp(1)",
        "weibull_shape": WEIBULL_SHAPE,
        "baseline_scale_months": BASELINE_SCALE_MONTHS,
        "coefficients": HAZARD_COEFFICIENTS,
        "stage_effect": STAGE_EFFECT,
        "imaging_biomarkers": {
            "size_cm": "summed longest lesion diameter at the first visit, cm (enters as size_cm - 4)",
            "growth": "log growth rate of lesion diameters per 3 months (first two visits measure it)",
            "cohorts_without_imaging_effect": ["general"],
        },
        "censoring": {
            "administrative_uniform_months": list(ADMIN_CENSOR_MONTHS),
            "dropout_exponential_mean_months": DROPOUT_MEAN_MONTHS,
        },
        "pfs": "lung_tki only; progression or death, whichever comes first",
    }
