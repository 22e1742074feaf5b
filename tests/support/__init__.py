"""Test helpers shared by the areas of the suite.

* :mod:`tests.support.backend` — the fake HTTP/1.1 back end (``Backend``, ``serve_in_thread``).
* :mod:`tests.support.proxy` — the data plane in-process (``make_config``, ``start_proxy``).
* :mod:`tests.support.process` — a ``quiesce`` subprocess (``Proc``, ``run_quiesce``: ``quiesce
  run`` waited for until ready, with its URLs), demo back ends in a thread (``BackendThread``).
* :mod:`tests.support.paths` — the C or the Python head path (``use_path``; the ``h1_path``
  fixture of tests/dataplane runs every test on both).
"""
