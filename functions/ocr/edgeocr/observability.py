"""Structured logs (Powertools), one JSON logger for the service, the worker and the app.

Logs carry the request's correlation id where there is one (``http.request_log`` sets it)
and never the image bytes, the body or the HMAC secret. Nothing here is HTTP: the CLI and
the worker import it without Starlette.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger

SERVICE = "edgeocr"
NAMESPACE = "edgeocr"  # CloudWatch metrics namespace (EMF)
logger = Logger(service=SERVICE)
