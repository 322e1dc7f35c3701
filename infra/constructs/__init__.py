"""Reusable constructs, one concern per module."""
