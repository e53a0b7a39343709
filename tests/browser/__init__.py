"""Browser tests of the rendered book (a package, so that its conftest does not shadow tests/conftest.py)."""
