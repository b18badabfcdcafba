"""Orchestration apart from the science: profiles run by papermill, run-stage folders, the book.

Nothing in the science modules imports this package; notebooks and the command line do.

- :mod:`synth7t.workflow.profiles`: parameter sets (``profiles/*.yml``) and the papermill runner
  (``synth7t run-profile``), with one console line per notebook and the injected-parameters cell hidden from the book;
- :mod:`synth7t.workflow.stage`: one stage of a run as a notebook sees it (its folder, banner, tables);
- :mod:`synth7t.workflow.book`: the Jupyter Book's chapter check, build and browser check (``synth7t book``).

The project root (``profiles/``, ``notebooks/``, ``_config.yml``, ``_toc.yml``) is an argument, by default the
current working directory: the installed library does not assume a repository around it.
"""
