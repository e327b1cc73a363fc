"""Durably cancel OpenAI Batch API jobs and keep every paid-for partial result."""

__version__ = "0.1.0"
