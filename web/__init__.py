"""The HTTP faces of the workers: the order API, and the service layer (``web/views.py``)
that it shares with the CLI."""
