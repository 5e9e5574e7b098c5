"""The one access-log line format that every tier writes, so one parser reads them all.

Every rendered server (nginx, apache, gunicorn, uvicorn) writes access-log lines whose first
fields are, separated by single spaces:

    <pid> <status> <seconds> <route> <request_id> <rest of line...>

- ``pid``: the PID of the worker process that served the request (decimal).
- ``status``: the 3-digit HTTP status.
- ``seconds``: the request time in decimal seconds (``0.000123``), or ``-`` when the tier cannot
  measure it (uvicorn's access logger has no duration).
- ``route``: the edge the request left by: the name of the upstream node it was proxied to, the
  word ``static`` when the node served a file itself, or ``-`` for an app server (the app).
- ``request_id``: the ``X-Request-ID`` (``-`` when absent).
- the rest (method, path, ...) is for people and is never parsed by the metrics engine; its last
  field is the time the tier finished the request (seconds since the epoch, with a fraction),
  which lets ``stackpanel trace`` lay the tiers of one request id out as a waterfall.

Apache can only print whole microseconds (``%D``); its lines say so by writing the duration as
``<n>us``. Parsers accept both forms.
"""
from __future__ import annotations

STATIC_ROUTE = "static"
APP_ROUTE = "-"

#: nginx ``log_format`` body. ``$sp_edge`` is the backend that answered (mapped from
#: ``$upstream_addr``), else ``$sp_route``, which the renderer sets per location.
NGINX_LOG_FORMAT = '$pid $status $request_time $sp_edge $sp_request_id $request_method "$request_uri" $msec'

#: Apache ``LogFormat``. ``SP_ROUTE`` is set with SetEnvIf per route by the renderer.
APACHE_LOG_FORMAT = '%P %>s %Dus %{SP_ROUTE}e %{X-Request-ID}i %m "%U%q" %{end:sec}t.%{end:usec_frac}t'

#: ... for a balanced route: the balancer member that answered (its ``route=`` is the node name).
APACHE_BALANCED_LOG_FORMAT = APACHE_LOG_FORMAT.replace("%{SP_ROUTE}e", "%{BALANCER_WORKER_ROUTE}e")

#: gunicorn sync workers: logging formatter (adds the pid) + gunicorn's access_log_format.
GUNICORN_FORMATTER = "%(process)d %(message)s %(created).6f"
GUNICORN_ACCESS_FORMAT = '%(s)s %(L)s - %({x-request-id}i)s %(m)s "%(U)s"'

#: uvicorn (alone, or as gunicorn's UvicornWorker): a uvicorn.logging.AccessFormatter format.
#: ``status_code`` is "200 OK" there; ``.3s`` keeps the digits only.
UVICORN_ACCESS_FORMAT = "%(process)d %(status_code).3s - - - %(request_line)s %(created).6f"
