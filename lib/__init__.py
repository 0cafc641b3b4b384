"""Sealant ADL workbook: the logic behind the notebooks."""

__version__ = "0.2.0"
