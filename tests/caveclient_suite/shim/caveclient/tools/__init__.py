"""caveclient's ``tools`` package: ``stage`` and ``table_manager`` are opencave's, ``testing`` is
caveclient's own helper (see ``testing.py``)."""
