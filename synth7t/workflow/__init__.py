"""Orchestration apart from the science: profiles run by papermill, run-stage folders, the book.

Nothing in the science modules imports this package; notebooks and the command line do.
"""
