"""One module per schema revision: ``NNNN_slug.py``, revision id ``NNNN``."""
