"""The jobflow Makers, run with jobflow's local manager and an in-memory store, on the examples."""

from pathlib import Path

import numpy as np
import pytest
from jobflow import Flow, JobStore, job, run_locally
from maggma.stores import MemoryStore
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from e3relax_fast import E3Relaxer, __version__
from e3relax_fast.io import read_structures
from e3relax_fast.workflows import E3RelaxBatchMaker, E3RelaxMaker

EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.fixture(scope="module")
def examples() -> list[Structure]:
    return [AseAtomsAdaptor.get_structure(r.structure) for r in read_structures([str(EXAMPLES)])][:4]


@job
def volume_of(structure: Structure) -> float:
    """A stand-in for the DFT step that follows the pre-relaxation: it only reads the structure."""
    return structure.volume


def _run(flow) -> tuple[dict, JobStore]:
    store = JobStore(MemoryStore())
    responses = run_locally(flow, store=store, log=False, ensure_success=True)
    return responses, store


def test_pre_relax_job_feeds_the_next_job(examples):
    pre = E3RelaxMaker().make(examples[0])
    after = volume_of(pre.output.structure)
    responses, _ = _run(Flow([pre, after]))
    output = responses[pre.uuid][1].output
    expected = E3Relaxer.from_pretrained().relax(examples[0]).final_structure
    assert isinstance(output["structure"], Structure)
    np.testing.assert_allclose(output["structure"].cart_coords, expected.cart_coords, atol=1e-9)
    assert output["model"] == "e3relax-small" and output["e3relax_fast_version"] == __version__
    assert output["confidence"]["last_layer_max_move"] >= 0 and output["warning"] == ""
    assert responses[after.uuid][1].output == pytest.approx(expected.volume)


def test_batch_job_keeps_order_and_records_failures(examples):
    unknown = examples[1].copy()
    unknown.replace_species({unknown.species[0]: "Og"})  # an element the model never saw
    batch = E3RelaxBatchMaker().make([examples[0], unknown, examples[2]])
    responses, _ = _run(batch)
    output = responses[batch.uuid][1].output
    assert output["failed"] == 1 and output["structures"][1] is None
    assert "not seen in training" in output["results"][1]["error"]
    for k in (0, 2):
        single = E3Relaxer.from_pretrained().relax(examples[k]).final_structure
        np.testing.assert_allclose(output["structures"][k].cart_coords, single.cart_coords, atol=1e-6)


def test_an_invalid_structure_fails_its_job_with_the_reason(examples):
    disordered = examples[0].copy()
    disordered.replace_species({disordered.species[0]: {disordered.species[0].symbol: 0.5}})
    pre = E3RelaxMaker().make(disordered)
    with pytest.raises(ValueError, match="'species' is disordered"):
        run_locally(pre, store=JobStore(MemoryStore()), log=False, raise_immediately=True)
