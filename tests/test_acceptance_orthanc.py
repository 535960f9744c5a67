"""Acceptance: Orthanc as the PACS forwards a phantom study and gets the node's SEG and SR back.

Orthanc and the node share Orthanc's network namespace. Orthanc lists the
node in DicomModalities and forwards the study with
``POST /modalities/node/store``, as an auto-routing rule would. The node's
destination is Orthanc's DICOM port, and the test reads the results back
through Orthanc's REST API.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest

from inference.result import SequenceRole
from tests.acceptance_helpers import (
    NODE_AE,
    Destination,
    ModelFiles,
    NodeDatabase,
    NodeProcess,
    acceptance_models,
    dice,
    manifest_name,
    orthanc_download,
    orthanc_series_by_modality,
    orthanc_study_id,
    orthanc_upload,
    seg_mask_on_grid,
    sr_algorithm_names,
    sr_probability,
    wait_for_job_state,
    write_clinical_csv,
    write_node_config,
)
from tests.conftest import free_port
from tests.peers import OrthancPeer, start_orthanc, wait_until
from training.phantom import PhantomStudy, make_study

pytestmark = pytest.mark.peers

MIN_DICE = 0.7
JOB_TIMEOUT_S = 120.0


@dataclass
class PacsAndNode:
    orthanc: OrthancPeer
    node: NodeProcess
    database: NodeDatabase
    models: ModelFiles
    folder: Path


@pytest.fixture(scope="module")
def pacs_and_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PacsAndNode]:
    folder = tmp_path_factory.mktemp("acceptance_orthanc")
    models = acceptance_models(folder / "models")
    node_port = free_port()

    with start_orthanc(folder, modalities={"node": (NODE_AE, "127.0.0.1", node_port)}) as orthanc:
        config = write_node_config(
            folder,
            port=node_port,
            models=models,
            destinations=[Destination("pacs", orthanc.ae_title, orthanc.dicom_port)],
            clinical_csv=folder / "clinical.csv",
        )
        node = NodeProcess(config, node_port, folder / "node.log", prefix=orthanc.namespace_prefix)
        node.start()
        database = NodeDatabase(folder / "data" / "otscc-node.db")
        try:
            yield PacsAndNode(orthanc, node, database, models, folder)
        finally:
            database.close()
            node.stop()


@pytest.fixture(scope="module")
def forwarded_study(pacs_and_node: PacsAndNode) -> tuple[PhantomStudy, dict[str, list[pydicom.Dataset]]]:
    # The demo model was trained on 128 x 128 x 24 phantoms, so the study has that grid.
    phantom = make_study(pacs_and_node.folder / "phantom", seed=4021)
    write_clinical_csv(pacs_and_node.folder / "clinical.csv", [phantom])
    files = [path for role in SequenceRole for path in phantom.files[role]]
    orthanc = pacs_and_node.orthanc
    orthanc_upload(orthanc, files)
    study_id = orthanc_study_id(orthanc, phantom.study_instance_uid)

    orthanc.rest_post("/modalities/node/store", [study_id])
    wait_for_job_state(pacs_and_node.database, phantom.study_instance_uid, ["done"], JOB_TIMEOUT_S, pacs_and_node.node)

    def results_stored() -> bool:
        grouped = orthanc_series_by_modality(orthanc, study_id)
        return bool(grouped.get("SEG")) and bool(grouped.get("SR"))

    wait_until(results_stored, 30, "the node's SEG and SR in Orthanc", 0.5)
    grouped = orthanc_series_by_modality(orthanc, study_id)
    downloads = pacs_and_node.folder / "downloaded"
    results = {modality: orthanc_download(orthanc, grouped[modality], downloads) for modality in ("SEG", "SR")}
    return phantom, results


def test_orthanc_receives_one_seg_and_sr(forwarded_study, pacs_and_node):
    phantom, results = forwarded_study

    assert len(results["SEG"]) == 1
    assert len(results["SR"]) == 1
    assert pacs_and_node.database.instance_count(phantom.study_instance_uid) == 3 * len(phantom.files[SequenceRole.CE_T1])


def test_seg_matches_phantom_ground_truth(forwarded_study, pacs_and_node):
    if not pacs_and_node.models.is_shipped_demo:
        pytest.skip("models/demo is missing; build it with `otscc-train demo` to check the Dice score")
    phantom, results = forwarded_study
    seg = results["SEG"][0]
    ce_t1 = [pydicom.dcmread(path, stop_before_pixels=True) for path in phantom.files[SequenceRole.CE_T1]]

    predicted = seg_mask_on_grid(
        seg,
        [str(ds.SOPInstanceUID) for ds in ce_t1],
        [ds.ImagePositionPatient for ds in ce_t1],
        phantom.mask.shape,
    )

    assert str(seg.StudyInstanceUID) == phantom.study_instance_uid
    assert str(seg.FrameOfReferenceUID) == phantom.frame_of_reference_uid
    assert phantom.mask.any()
    assert dice(predicted, phantom.mask.astype(bool)) >= MIN_DICE


def test_sr_states_probability_and_model(forwarded_study, pacs_and_node):
    phantom, results = forwarded_study
    sr = results["SR"][0]

    probability = sr_probability(sr)

    assert str(sr.StudyInstanceUID) == phantom.study_instance_uid
    assert probability is not None
    assert 0.0 <= probability <= 1.0
    assert pacs_and_node.database.jobs(phantom.study_instance_uid)[-1].result_summary["clinical_source"] == "csv"
    assert manifest_name(pacs_and_node.models.segmentation) in sr_algorithm_names(sr)
    assert json.loads(pacs_and_node.models.nomogram.read_text(encoding="utf-8"))["name"] in sr_algorithm_names(sr)

