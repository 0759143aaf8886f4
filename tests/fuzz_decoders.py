"""Coverage-guided fuzzing (atheris / libFuzzer) of the decoders that read hostile input.

    python tests/fuzz_decoders.py -runs=20000 -max_total_time=60 [corpus_dir]

One input is tried three ways: as a serialised ``VectorBatch`` (``baseliner.service.serde`` check + decode, then
``baseliner.models.validate`` and the feature transform on every window that passes; the batch is decoded
twice, and must give the same identity table both times), as a Falco alert body
(``baseliner.service.falco.parse_alert``), and as a write-ahead log segment
(``baseliner.service.wal.read_segment``).  Any
exception other than the documented refusals (``DecodeError``, ``ValidationError``, ``FalcoPayloadError``,
``StateError``) is a finding: libFuzzer stops and writes the input as ``crash-*``.
``tests/test_reliability_fuzz.py`` runs it for a bounded number of iterations.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

with atheris.instrument_imports():
    import numpy as np
    from baseliner.models.errors import StateError, ValidationError
    from baseliner.models.integrity import Keyring
    from baseliner.models.rate_features import transform_block
    from baseliner.models.validate import validate_block
    from baseliner.protos.v1 import vectors_pb2
    from baseliner.service import serde
    from baseliner.service.falco import FalcoPayloadError, parse_alert
    from baseliner.service.wal import read_segment
    from google.protobuf.message import DecodeError

DECODER = serde.Decoder(1000)
WAL_FILE = Path(tempfile.mkdtemp()) / "000000000001.wal"
WAL_KEYS = Keyring.of(b"fuzz-write-ahead-log-key-0123456789")


def one(data: bytes) -> None:
    try:
        batch = vectors_pb2.VectorBatch.FromString(data)
    except DecodeError:
        batch = None
    if batch is not None:
        try:
            DECODER.check_batch(batch)
            block, _ = DECODER.decode_block(batch)
            if DECODER.decode_block(batch)[0].identities is not block.identities:  # cached by its bytes
                raise AssertionError("the same identity table decoded to another table")
            ok, _ = validate_block(block)
            good = block.take(np.flatnonzero(ok))
            if len(good):
                x = transform_block(good)
                if not np.isfinite(x).all():
                    raise AssertionError("validated windows transformed into NaN")
        except ValidationError:
            pass
    try:
        parse_alert(data, 64 * 1024)
    except FalcoPayloadError:
        pass
    WAL_FILE.write_bytes(b"BASELINER-WAL 1 sha256\n" + data)
    try:
        for _ in read_segment(WAL_FILE, WAL_KEYS, last=bool(data[:1] == b"\x00")):
            pass
    except StateError:
        pass


def main() -> None:
    os.environ.setdefault("PYTHONHASHSEED", "0")
    atheris.Setup(sys.argv, one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
