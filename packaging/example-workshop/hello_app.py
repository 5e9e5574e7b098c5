"""The workshop's demo app: needs `humanize`, which only the workshop's requirements.txt brings."""
from __future__ import annotations

import time

import humanize
from flask import Flask

app = Flask(__name__)
STARTED = time.time()


@app.get("/")
def index() -> dict[str, str]:
    return {"hello": "workshop", "up": humanize.naturaldelta(time.time() - STARTED + 1)}


@app.get("/healthz")
def healthz() -> str:
    return "ok"
