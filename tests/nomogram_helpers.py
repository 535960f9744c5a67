"""A small nomogram model file whose scores are worked out by hand in the tests."""

from __future__ import annotations

import copy


def hand_model_document() -> dict:
    """Return a model document with two features, age (imputed) and sex (not imputed).

    Widths over the ranges: rad_score 1.2 * 5 = 6.0 (the widest), age
    0.03 * 60 = 1.8, sex 0.4 * 1 = 0.4, so one linear-predictor unit is
    100 / 6 points. The lowest contributions are -2.4, 0.9 and -0.4, so
    lp at zero points is -3 - 2.4 + 0.9 - 0.4 = -4.9.
    """
    return copy.deepcopy(
        {
            "schema_version": 1,
            "kind": "nomogram",
            "name": "hand-nomogram",
            "version": "0.0.1",
            "is_demo": True,
            "training_data": "none: coefficients written by hand for tests",
            "intended_use": "unit tests only",
            "radiomics_features": [
                {"name": "ce_t1_original_firstorder_Mean", "mean": 10.0, "std": 2.0},
                {"name": "t2_original_glcm_Contrast", "mean": 0.0, "std": 1.0},
            ],
            "radiomics_signature": {
                "intercept": 0.2,
                "coefficients": {
                    "ce_t1_original_firstorder_Mean": 0.5,
                    "t2_original_glcm_Contrast": -1.0,
                },
            },
            "clinical_variables": [
                {
                    "name": "age",
                    "type": "numeric",
                    "unit": "years",
                    "encoding": None,
                    "imputation": 60.0,
                },
                {
                    "name": "sex",
                    "type": "categorical",
                    "unit": "",
                    "encoding": {"M": 0.0, "F": 1.0},
                    "imputation": "unavailable",
                },
            ],
            "nomogram": {
                "intercept": -3.0,
                "coefficients": {"rad_score": 1.2, "age": 0.03, "sex": -0.4},
            },
            "cutoff": 0.3,
            "points_scale": {
                "ranges": {"rad_score": [-2.0, 3.0], "age": [30.0, 90.0], "sex": [0.0, 1.0]},
                "points_per_lp_unit": 100.0 / 6.0,
                "lp_at_zero_points": -4.9,
            },
            "training_summary": {},
        }
    )


# Feature values with z = 1 and z = 0.5, so rad_score = 0.2 + 0.5 - 0.5 = 0.2.
HAND_FEATURES = {"ce_t1_original_firstorder_Mean": 12.0, "t2_original_glcm_Contrast": 0.5}
