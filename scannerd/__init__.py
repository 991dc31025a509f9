"""scannerd: payment and medical-insurance code scanners → classified events for the HIS."""

__version__ = "0.1.0"
