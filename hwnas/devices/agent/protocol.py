"""What the agent and the ``remote`` device agree on: routes, names, limits, the runtimes served.

Every request carries ``Authorization: Bearer TOKEN``. Bodies and answers are JSON, except a model
upload, whose body is the model's bytes and whose name is their SHA-256 (content-addressed: the
client asks with ``HEAD`` first and sends a model the agent does not hold yet).

    GET  /v1/health                   status, version, busy, jobs done, load, runtimes
    GET  /v1/fingerprint?spec=SPEC    the fingerprint of device SPEC on the agent
    HEAD /v1/models/SHA256            200 when held, 404 when not
    PUT  /v1/models/SHA256            upload (checked: size, hash, magic bytes, the runtime loads it)
    POST /v1/measure                  {"spec", "sha256", "timing"} -> {"stats", "conditions", "input_shapes"}

Errors are ``{"error": "one line"}`` with a 4xx/5xx status; 503 means busy (retry later).
"""

from __future__ import annotations

import re

API = "/v1"
TOKEN_ENV = "HWNAS_AGENT_TOKEN"
MIN_TOKEN_CHARS = 16
SHA256 = re.compile(r"[0-9a-f]{64}")
# Device kinds an agent serves: local runtimes that load model bytes (never torch, never another agent).
SERVED_KINDS = ("ort-cpu", "tflite-cpu", "et-cpu")
MAX_JSON_BYTES = 64 * 1024
