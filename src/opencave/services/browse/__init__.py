"""The data browser's page contents: datastacks, neurons at a moment, search."""

from opencave.services.browse.service import BrowseService, Moment

__all__ = ["BrowseService", "Moment"]
