"""The annotation engine: live annotation tables (CAVE's AnnotationEngine)."""

from opencave.services.annotation.layout import RowLayout, row_layout
from opencave.services.annotation.payloads import AnnotationsInvalid
from opencave.services.annotation.service import MAX_INSERT, AnnotationService

__all__ = ["MAX_INSERT", "AnnotationService", "AnnotationsInvalid", "RowLayout", "row_layout"]
