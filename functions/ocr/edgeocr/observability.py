"""Structured logs (Powertools), one JSON logger for the service, the worker and the app.

Logs carry a correlation id (set per request by ``http.request_log``, per record by the
worker) and never the image bytes, the body or the HMAC secret. Nothing here is HTTP: the
CLI and the worker import it without Starlette.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger

SERVICE = "edgeocr"
NAMESPACE = "edgeocr"  # CloudWatch metrics namespace (EMF)
logger = Logger(service=SERVICE)
