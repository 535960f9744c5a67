"""Saving, loading and validating nomogram model files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from inference.nomogram import NomogramModel, model_from_dict
from tests.nomogram_helpers import HAND_FEATURES, hand_model_document


def test_save_load_round_trip(tmp_path: Path) -> None:
    model = model_from_dict(hand_model_document())
    path = tmp_path / "nomogram.json"

    model.save(path)
    loaded = NomogramModel.load(path)

    clinical = {"age": 44, "sex": "M"}
    assert loaded.score(HAND_FEATURES, clinical) == model.score(HAND_FEATURES, clinical)
    assert loaded.identity == model.identity
    assert json.loads(path.read_text()) == hand_model_document()


def test_identity_names_kind_and_digest(tmp_path: Path) -> None:
    path = tmp_path / "nomogram.json"
    path.write_text(json.dumps(hand_model_document()))

    identity = NomogramModel.load(path).identity

    assert identity.kind == "nomogram"
    assert identity.name == "hand-nomogram"
    assert identity.version == "0.0.1"
    assert identity.is_demo is True
    assert identity.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_invalid_json_raises(tmp_path: Path) -> None:
    path = tmp_path / "nomogram.json"
    path.write_text("{not json")

    with pytest.raises(ValueError, match="is not valid JSON"):
        NomogramModel.load(path)


def _drop(key: str):
    def change(doc: dict) -> None:
        del doc[key]

    return change


def _set(path: tuple, value: object):
    def change(doc: dict) -> None:
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


INVALID_CASES = {
    "name missing": (_drop("name"), r"^name is missing"),
    "schema too new": (_set(("schema_version",), 2), "schema_version is 2"),
    "wrong kind": (_set(("kind",), "segmentation"), "kind is 'segmentation'"),
    "is_demo not bool": (_set(("is_demo",), "yes"), "is_demo must be a bool"),
    "zero std": (
        _set(("radiomics_features", 1, "std"), 0.0),
        r"radiomics_features\[1\].std is 0.0",
    ),
    "std not number": (
        _set(("radiomics_features", 0, "std"), "2"),
        r"radiomics_features\[0\].std must be a finite",
    ),
    "no features": (_set(("radiomics_features",), []), "radiomics_features is empty"),
    "feature without coefficient": (
        _set(("radiomics_signature", "coefficients"), {"ce_t1_original_firstorder_Mean": 0.5}),
        "no entry for feature 't2_original_glcm_Contrast'",
    ),
    "bad type": (
        _set(("clinical_variables", 0, "type"), "ordinal"),
        r"clinical_variables\[0\].type is 'ordinal'",
    ),
    "bad imputation": (
        _set(("clinical_variables", 1, "imputation"), "X"),
        r"clinical_variables\[1\].imputation is 'X'",
    ),
    "missing term": (
        _set(("nomogram", "coefficients"), {"rad_score": 1.2, "age": 0.03}),
        "nomogram.coefficients has",
    ),
    "infinite intercept": (
        _set(("nomogram", "intercept"), float("inf")),
        "nomogram.intercept must be a finite",
    ),
    "cutoff above one": (_set(("cutoff",), 1.5), "cutoff is 1.5"),
    "range reversed": (
        _set(("points_scale", "ranges", "age"), [90.0, 30.0]),
        r"points_scale.ranges\['age'\]",
    ),
    "scale inconsistent": (
        _set(("points_scale", "lp_at_zero_points"), -4.0),
        "points_scale.lp_at_zero_points is -4.0",
    ),
}


@pytest.mark.parametrize("change, message", INVALID_CASES.values(), ids=INVALID_CASES.keys())
def test_invalid_field_raises_naming_it(tmp_path: Path, change, message: str) -> None:
    document = hand_model_document()
    change(document)
    path = tmp_path / "nomogram.json"
    path.write_text(json.dumps(document))

    with pytest.raises(ValueError, match=message):
        NomogramModel.load(path)
