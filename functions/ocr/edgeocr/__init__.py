"""edgeocr: serverless, edge-cached OCR (PP-OCRv6 on ONNX Runtime)."""

__version__ = "0.1.0"
