"""The wire schema version (``VectorBatch.schema_version``, ``Hello.schema_version``), defined once for both ends.

A reader ignores fields it does not know (protobuf's forward compatibility): adding a field keeps the
version.  A breaking change (a field that changes meaning, or that every reader must understand) bumps it;
a service refuses a sensor or a batch of another version with :func:`unsupported`'s message.

>>> unsupported(2)
'schema version 2 is not supported: this service reads schema version 3'
"""

from __future__ import annotations

SCHEMA_VERSION = 3


def unsupported(version: int) -> str:
    """Why a service refuses a sensor or batch of schema ``version``: both versions, named."""
    return f"schema version {version} is not supported: this service reads schema version {SCHEMA_VERSION}"
