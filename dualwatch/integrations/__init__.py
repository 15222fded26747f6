"""Adapters that plug dualwatch into training frameworks' own loops.

One module per framework, imported only when used: ``lightning`` (a Lightning ``Callback``),
``paddle`` (a ``paddle.callbacks.Callback`` for ``Model.fit``) and ``mmengine`` (a hook
registered in MMEngine's ``HOOKS`` registry). Plain loops need none: they use
:class:`dualwatch.Watcher` directly.
"""
