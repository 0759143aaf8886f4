"""The operator console: a web UI served by ``baseliner serve`` on its own listener (``console.listen``).

``app.py`` (the listener, its middleware, ``attach``), ``pages.py`` (routes and handlers), ``views.py`` (what
each page shows, as data), ``charts.py`` (the drawings' geometry), ``history.py`` (what the pipeline does not
keep: recent scores, anomalies, Falco hits, containers and nodes per image; bounded, in memory),
``sessions.py`` (login, cookie, CSRF), ``actions.py`` (feedback, mode, reset, with audit lines); the pages'
templates and assets are in ``templates/`` and ``static/``.  ``docs/console.md`` describes it for users.
"""
