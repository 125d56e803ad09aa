"""The info service: aligned volumes, datastacks and their image mirrors."""

from opencave.services.info.registry import DATASTACK_FIELDS, InfoRegistry

__all__ = ["DATASTACK_FIELDS", "InfoRegistry"]
