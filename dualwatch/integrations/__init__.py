"""Adapters that plug dualwatch into training frameworks' own loops.

One module per framework, imported only when used: ``lightning`` (a Lightning ``Logger`` and
the StableSR edge monitor ``Callback``; ``pytorch_lightning``: the same on that package),
``paddle`` (a ``paddle.callbacks.Callback`` for ``Model.fit``) and ``mmengine`` (a vis backend
and a hook, registered in MMEngine's ``VISBACKENDS`` and ``HOOKS``). Plain loops need none: they
use :class:`dualwatch.Watcher` directly. Every integration names its check frequency ``every``
and also takes its host's spelling of it (:mod:`dualwatch.integrations._options`).
"""
