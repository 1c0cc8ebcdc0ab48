"""Incidents (SPEC 10): many orders failing for one reason within a window are one problem."""
