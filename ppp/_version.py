"""The package version, kept in one place for the build and the runtime."""

__version__ = "0.1.0"
