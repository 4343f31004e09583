"""AWS Lambda entry point (SAM ``Handler: app.handler``): the FastAPI app behind Mangum.

The app is built at import (cold start) without loading any model; the first cache miss
loads the ONNX sessions, and later invocations of this execution environment reuse them.
"""

from mangum import Mangum

from edgeocr.http.app import create_app
from edgeocr.settings import Settings

app = create_app(Settings.from_env())
handler = Mangum(app, lifespan="off")
