"""``edgeocr ocr [--json] FILE...`` and ``edgeocr serve``: entry points, so they read the
environment; the reading itself is the service's, as for the HTTP app and the worker."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import InputError
from .settings import Settings


def _ocr(args: argparse.Namespace) -> int:
    from .store import MemoryStore
    from .wiring import build_service

    settings = Settings.from_env()
    service = build_service(settings, store=MemoryStore())  # read_file stores nothing
    failed = 0
    for name in args.files:
        try:
            path = Path(name)
            if path.stat().st_size > settings.max_upload_bytes:
                raise InputError(f"the file is over {settings.max_upload_bytes} bytes",
                                 code="too_many_bytes")
            result = service.read_file(path.read_bytes(), on_page=_progress(name))
        except InputError as exc:
            failed += 1
            _emit(args, {"file": name, "error": {"code": exc.code, "message": exc.message}})
            continue
        except OSError as exc:
            failed += 1
            _emit(args, {"file": name, "error": {"code": "unreadable_file", "message": str(exc)}})
            continue
        finally:
            _clear_progress()
        if args.json:
            _emit(args, {"file": name, **result})
        else:
            if len(args.files) > 1:
                print(f"== {name}", flush=True)
            print(result["text"].replace("\f", "\n\f\n"), flush=True)
    return 1 if failed else 0


def _progress(name: str):
    """Pages done out of pages on stderr, only for a person watching a terminal."""
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        sys.stderr.write(f"\r\x1b[K{name}: page {done}/{total}")
        sys.stderr.flush()

    return show


def _clear_progress() -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()


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
    ocr = sub.add_parser("ocr", help="OCR local images, PDFs and TIFFs")
    ocr.add_argument("--json", action="store_true", help="one JSON object per file, per line")
    ocr.add_argument("files", nargs="+", metavar="FILE")
    ocr.set_defaults(func=_ocr)
    serve = sub.add_parser("serve", help="run the local service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0)
    serve.set_defaults(func=_serve)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:  # Ctrl-C: stop quietly, as shell tools do
        return 130
    except BrokenPipeError:  # `edgeocr ocr … | head`: the reader left, so do we, quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
