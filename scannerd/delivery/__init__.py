"""Handing scans to the HIS: the subscriber hub, its transports, and delivery outcomes."""
