"""Helpers shared by test folders (not fixtures: those live in conftest.py files)."""
