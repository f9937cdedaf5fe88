"""The package version, in a leaf module so core modules can read it without importing ``edgekit``'s short API."""

__version__ = "0.1.0"
