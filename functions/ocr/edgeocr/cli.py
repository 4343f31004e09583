"""``edgeocr ocr [--json] FILE...`` and ``edgeocr serve``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import InputError
from .settings import Settings


def _ocr(args: argparse.Namespace) -> int:
    from .keys import content_hash, pipeline_id
    from .ocr.engine import Engine
    from .result import build_result

    settings = Settings.from_env()
    engine = Engine(settings.model_dir, settings.engine, settings.threads)
    pipeline = pipeline_id(engine.models, settings.engine)
    failed = 0
    for name in args.files:
        try:
            data = Path(name).read_bytes()
            output = engine.ocr(data, mode=args.mode, max_bytes=settings.max_bytes,
                                max_pixels=settings.max_pixels)
            result = build_result(output, content_hash(data, settings.hash_secret), pipeline)
        except InputError as exc:
            failed += 1
            _emit(args, {"file": name, "error": {"code": exc.code, "message": exc.message}})
            continue
        except OSError as exc:
            failed += 1
            _emit(args, {"file": name, "error": {"code": "unreadable_file", "message": str(exc)}})
            continue
        if args.json:
            _emit(args, {"file": name, **result})
        else:
            if len(args.files) > 1:
                print(f"== {name}")
            print(result["text"])
    return 1 if failed else 0


def _emit(args: argparse.Namespace, obj: dict) -> None:
    if args.json:
        print(json.dumps(obj, ensure_ascii=False), flush=True)
    elif "error" in obj:
        print(f"{obj['file']}: {obj['error']['message']}", file=sys.stderr)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    port = args.port or int(os.environ.get("PORT", "8000"))
    # EMF metric lines are for CloudWatch; locally they would only bury the access log
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    print(f"edgeocr: serving on http://{args.host}:{port}/", flush=True)
    uvicorn.run("edgeocr.cli:serve_app", factory=True, host=args.host, port=port,
                log_level="info")
    return 0


def serve_app():
    """The app ``edgeocr serve`` runs (a uvicorn factory: this entry point reads the
    environment, nothing below it does)."""
    from .http.app import create_app

    return create_app(Settings.from_env())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgeocr", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    ocr = sub.add_parser("ocr", help="OCR local image files")
    ocr.add_argument("--json", action="store_true", help="one JSON object per file, per line")
    ocr.add_argument("--mode", choices=["auto", "page", "line"], default="auto",
                     help="auto (default) decides between a page and a single line")
    ocr.add_argument("files", nargs="+", metavar="FILE")
    ocr.set_defaults(func=_ocr)
    serve = sub.add_parser("serve", help="run the local service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0)
    serve.set_defaults(func=_serve)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
