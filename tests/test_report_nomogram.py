"""Nomogram figure: points scale, axis layout and the adapter for the model file."""

from __future__ import annotations

import math

import pytest

from inference import clinical, nomogram
from training.nomogram_figure import (
    NomogramCategory,
    NomogramSpec,
    NomogramVariable,
    nomogram_layout,
    plot_nomogram,
    spec_from_model,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _example_spec() -> NomogramSpec:
    # Contribution spans: rad-score 2 * 3 = 6 (the widest, so 100 points),
    # age 0.02 * 60 = 1.2, sex 0.5, T stage 0.6 * 3 = 1.8, depth 0.1 * 20 = 2.
    return NomogramSpec(
        intercept=-3.0,
        variables=(
            NomogramVariable("rad_score", 2.0, "Rad-score", value_range=(-1.0, 2.0)),
            NomogramVariable("age", 0.02, "Age (years)", value_range=(20.0, 80.0)),
            NomogramVariable(
                "sex", 0.5, "Sex", categories=(NomogramCategory("F", 0.0), NomogramCategory("M", 1.0))
            ),
            NomogramVariable(
                "t_stage",
                0.6,
                "T stage",
                categories=tuple(NomogramCategory(f"T{k + 1}", float(k)) for k in range(4)),
            ),
            NomogramVariable("doi_mm", -0.1, "Depth of invasion (mm)", value_range=(0.0, 20.0)),
        ),
    )


def test_points_follow_harrell_scale():
    spec = _example_spec()

    # 100 points per 6 units of linear predictor.
    assert spec.points_per_unit == pytest.approx(100 / 6)
    assert spec.points("rad_score", 2.0) == pytest.approx(100.0)
    assert spec.points("rad_score", -1.0) == pytest.approx(0.0)
    # Age 50: (0.02 * 50 - 0.02 * 20) * 100 / 6 = 10
    assert spec.points("age", 50.0) == pytest.approx(10.0)
    assert spec.points("sex", 1.0) == pytest.approx(50 / 6)
    # A negative coefficient puts 0 points at the top of the range.
    assert spec.points("doi_mm", 20.0) == pytest.approx(0.0)
    assert spec.points("doi_mm", 0.0) == pytest.approx(200 / 6)
    # 100 + 20 + 8.33 + 30 + 33.33
    assert spec.max_total_points() == pytest.approx(1150 / 6)


def test_total_points_give_model_probability():
    spec = _example_spec()
    values = {"rad_score": 0.5, "age": 50.0, "sex": 1.0, "t_stage": 2.0, "doi_mm": 4.0}
    # lp = -3 + 2 * 0.5 + 0.02 * 50 + 0.5 + 0.6 * 2 - 0.1 * 4 = 0.3
    direct = 1 / (1 + math.exp(-0.3))
    # Points: 50 + 10 + 8.333 + 20 + 26.667 = 115
    total = sum(spec.points(name, value) for name, value in values.items())

    assert total == pytest.approx(115.0)
    assert spec.probability(total) == pytest.approx(direct)


def test_layout_places_probability_ticks():
    rows = nomogram_layout(_example_spec())
    labels = [row.label for row in rows]
    total_row = rows[labels.index("Total Points")]
    probability_row = rows[-1]

    assert labels[0] == "Points"
    assert labels[1:6] == ["Rad-score", "Age (years)", "Sex", "T stage", "Depth of invasion (mm)"]
    # The maximum total of 191.7 points rounds up to a 200-point axis.
    assert total_row.tick_labels[-1] == "200"
    assert total_row.positions[-1] == pytest.approx(100.0)
    # p = 0.5 where lp = 0: total = (0 - (-6.6)) * 100 / 6 = 110, drawn at 110 / 2 = 55.
    index = probability_row.tick_labels.index("0.5")
    assert probability_row.positions[index] == pytest.approx(55.0)
    # Depth axis runs right to left: 0 mm sits at 33.3 points.
    depth_row = rows[5]
    assert depth_row.positions[depth_row.tick_labels.index("0")] == pytest.approx(100 / 3)


def test_plot_nomogram_writes_png(tmp_path):
    path = plot_nomogram(_example_spec(), tmp_path / "nomogram.png", title="Example")

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert path.stat().st_size > 10_000


def test_spec_rejects_variable_without_range():
    with pytest.raises(ValueError, match="needs a value_range or categories"):
        NomogramVariable("age", 0.1)


def test_spec_rejects_duplicate_names():
    variable = NomogramVariable("age", 0.1, value_range=(0.0, 1.0))
    with pytest.raises(ValueError, match="duplicates"):
        NomogramSpec(intercept=0.0, variables=(variable, variable))


def test_spec_from_plain_mapping():
    spec = spec_from_model(
        {
            "intercept": -1.0,
            "variables": [
                {"name": "rad_score", "coefficient": 1.5, "minimum": -2, "maximum": 2},
                {"name": "sex", "coefficient": 0.4, "categories": {"F": 0, "M": 1}},
            ],
        }
    )

    assert [v.name for v in spec.variables] == ["rad_score", "sex"]
    assert spec.points("rad_score", 2.0) == pytest.approx(100.0)
    assert spec.points("sex", 1.0) == pytest.approx(0.4 * 100 / 6)


def test_spec_from_model_rejects_missing_intercept():
    with pytest.raises(ValueError, match="needs an 'intercept'"):
        spec_from_model({"variables": []})


def _nomogram_model():
    coefficients = {"rad_score": 1.8, "age": 0.01, "sex": 0.3, "t_stage": 0.7, "doi_mm": 0.12}
    ranges = {
        "rad_score": (-2.0, 3.0),
        "age": (25.0, 85.0),
        "sex": (0.0, 1.0),
        "t_stage": (1.0, 4.0),
        "doi_mm": (0.5, 18.0),
    }
    variables = [
        nomogram.ClinicalVariable("age", clinical.VariableType.NUMERIC, 60.0, unit="years"),
        nomogram.ClinicalVariable(
            "sex", clinical.VariableType.CATEGORICAL, None, encoding={"F": 0.0, "M": 1.0}
        ),
        nomogram.ClinicalVariable(
            "t_stage",
            clinical.VariableType.CATEGORICAL,
            None,
            encoding={"T1": 1.0, "T2": 2.0, "T3": 3.0, "T4": 4.0},
        ),
        nomogram.ClinicalVariable("doi_mm", clinical.VariableType.NUMERIC, None, unit="mm"),
    ]
    return nomogram.NomogramModel(
        name="example",
        version="1",
        is_demo=True,
        training_data="synthetic phantoms",
        intended_use="tests",
        features=[nomogram.RadiomicsFeatureTerm("ce_t1_original_firstorder_Mean", 100.0, 20.0, 0.9)],
        signature_intercept=0.1,
        clinical_variables=variables,
        intercept=-4.0,
        coefficients=coefficients,
        cutoff=0.4,
        points_scale=nomogram.build_points_scale(-4.0, coefficients, ranges),
    )


def test_spec_matches_nomogram_model_points():
    model = _nomogram_model()
    spec = spec_from_model(model)
    result = model.score(
        {"ce_t1_original_firstorder_Mean": 130.0},
        {"age": 70, "sex": "M", "t_stage": "T3", "doi_mm": 6.5},
    )

    assert [v.label for v in spec.variables] == [
        "Rad-score", "Age (years)", "Sex", "T stage", "Depth of invasion (mm)",
    ]
    assert spec.points_per_unit == pytest.approx(model.points_scale.points_per_lp_unit)
    assert spec.linear_predictor(0.0) == pytest.approx(model.points_scale.lp_at_zero_points)
    for name, points in result.points.items():
        assert spec.points(name, _encoded(model, name, result)) == pytest.approx(points)
    assert spec.probability(result.total_points) == pytest.approx(result.probability)


def _encoded(model, name, result):
    inputs = {"age": 70.0, "sex": 1.0, "t_stage": 3.0, "doi_mm": 6.5}
    return result.radiomics_score if name == "rad_score" else inputs[name]


def test_spec_from_model_file_json(tmp_path):
    model = _nomogram_model()
    path = tmp_path / "nomogram.json"
    model.save(path)
    from training.report import load_nomogram_spec

    spec = load_nomogram_spec(path)

    assert spec.points_per_unit == pytest.approx(model.points_scale.points_per_lp_unit)
    assert [c.label for c in spec.variables[3].categories] == ["T1", "T2", "T3", "T4"]
    assert plot_nomogram(spec, tmp_path / "nomogram.png").read_bytes()[:8] == PNG_SIGNATURE


def test_cli_draws_demo_model_nomogram(tmp_path):
    import argparse

    from training.report import DEMO_NOTICE, add_arguments, run_from_args

    model_path = tmp_path / "nomogram.json"
    _nomogram_model().save(model_path)
    predictions = tmp_path / "predictions.csv"
    lines = ["case_id,split,label,prob_nomogram"]
    lines += [f"c{k},train,{k % 2},{0.2 + 0.05 * k + 0.1 * (k % 2):.2f}" for k in range(12)]
    predictions.write_text("\n".join(lines) + "\n")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            "--predictions", str(predictions),
            "--output-directory", str(tmp_path / "out"),
            "--nomogram-model", str(model_path),
            "--n-bootstrap", "50",
        ]
    )

    assert run_from_args(args) == 0
    assert (tmp_path / "out" / "nomogram.png").read_bytes()[:8] == PNG_SIGNATURE
    # The model file is a demo model, so the notice appears without --demo.
    assert DEMO_NOTICE in (tmp_path / "out" / "index.html").read_text()
