"""The Neuroglancer JSON state service: states and segment-property documents, kept as posted."""

from opencave.services.state.payload import MAX_COMPRESSED_BYTES, check_json, compress_limited
from opencave.services.state.store import MAX_DOCUMENT_ID, NEW_ID_BOUND, DocumentKind, DocumentStore, StoredDocument

__all__ = [
    "MAX_COMPRESSED_BYTES",
    "MAX_DOCUMENT_ID",
    "NEW_ID_BOUND",
    "DocumentKind",
    "DocumentStore",
    "StoredDocument",
    "check_json",
    "compress_limited",
]
