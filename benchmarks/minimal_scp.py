"""A minimal pynetdicom C-STORE receiver, the reference row of ``bench_ingest.py``.

Usage::

    .venv/bin/python benchmarks/minimal_scp.py PORT FOLDER [MAX_PDU]

It accepts MR Image Storage in explicit and implicit VR little endian under
the called AE title OTSCC_NODE and writes each dataset's bytes, as received,
to a numbered file in FOLDER. It does no validation, no fsync and no database
work, and it keeps pynetdicom's defaults (maximum PDU 16382 unless MAX_PDU
is given, Nagle's algorithm on). It shows what pynetdicom's association loop
reaches when the C-STORE handler does almost nothing.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import MRImageStorage

AE_TITLE = "OTSCC_NODE"


def serve(port: int, folder: Path, max_pdu: int = 16382) -> None:
    """Listen on 127.0.0.1:``port`` until interrupted, writing every dataset into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    counter = itertools.count(1)

    def on_store(event: Event) -> int:
        target = folder / f"{next(counter)}.dcm"
        target.write_bytes(event.request.DataSet.getvalue())
        return 0x0000

    entity = AE(ae_title=AE_TITLE)
    entity.maximum_pdu_size = max_pdu
    entity.add_supported_context(MRImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    entity.start_server(("127.0.0.1", port), evt_handlers=[(evt.EVT_C_STORE, on_store)])


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: minimal_scp.py PORT FOLDER [MAX_PDU]")
    serve(int(sys.argv[1]), Path(sys.argv[2]), *(int(value) for value in sys.argv[3:]))
