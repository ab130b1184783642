"""The front door's implementation: what ``xenevt`` re-exports (its ``__all__``), and nothing else public.

Import from ``xenevt``, never from here: the module layout below may change.  ``host`` holds a host
(``open``, ``Host``: one backend chosen once, opened when first used), ``events`` the consume loop as an
iterator, ``source`` the one place that says which memory or evidence dump and doctor read (and refuses
combinations, with one message each), ``reading`` what dump and doctor do with a source.  The CLI parses,
calls these, and renders; the layers contract puts this package between the evidence and the CLI.

Nothing here is imported at module level beyond the standard library's lightest parts: ``import xenevt`` is
what the ``xenevt`` command does first, and ``xenevt --help`` must start about as fast as ``import click``.
"""
