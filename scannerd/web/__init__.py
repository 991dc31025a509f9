"""The diagnostic page (static files, package data)."""
