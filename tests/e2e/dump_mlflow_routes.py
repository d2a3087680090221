"""Print every HTTP route of the installed MLflow server, one per line, as ``METHOD PATH``.

Run it with the Python that has MLflow installed (the e2e venv)::

    python tests/e2e/dump_mlflow_routes.py > /tmp/routes.txt
    MLFLOW_ROUTES_FILE=/tmp/routes.txt cargo test routes

Flask rules are printed as Werkzeug writes them (``<x>``, ``<path:x>``). FastAPI paths are converted to the same
syntax (``{x}`` -> ``<x>``, ``{x:path}`` -> ``<path:x>``). HEAD and OPTIONS are left out (both frameworks add them
to every GET route / every route). The WSGI mount at "/" that carries the Flask app is skipped: its routes are the
Flask ones. Nothing here starts a server or touches a store; importing the apps only builds the route tables.
"""

import re
import sys
import warnings

warnings.simplefilter("ignore")

_SKIP_METHODS = {"HEAD", "OPTIONS"}


def flask_routes():
    from mlflow.server import app

    for rule in app.url_map.iter_rules():
        for method in rule.methods or ():
            if method not in _SKIP_METHODS:
                yield method, rule.rule


def _fastapi_path(path):
    # {name:path} -> <path:name>; {name} or {name:str} -> <name>
    path = re.sub(r"\{(\w+):path\}", r"<path:\1>", path)
    return re.sub(r"\{(\w+)(?::\w+)?\}", r"<\1>", path)


def _walk(routes, prefix=""):
    """Yields (methods, path) for every endpoint route, through mounts and included routers."""
    from starlette.routing import Mount

    for route in routes:
        # FastAPI >= 0.130 keeps included routers as _IncludedRouter objects.
        contexts = getattr(route, "effective_route_contexts", None)
        if callable(contexts):
            for ctx in contexts():
                inner = ctx.starlette_route or ctx.original_route
                methods = getattr(inner, "methods", None) or getattr(ctx.original_route, "methods", None)
                yield methods, prefix + ctx.path
            continue
        if isinstance(route, Mount):
            if route.path in ("", "/"):
                continue  # the Flask app (WSGI), dumped separately
            yield from _walk(route.routes or [], prefix + route.path)
            continue
        path = getattr(route, "path", None)
        if path is None:
            print(f"# unhandled route object: {route!r}", file=sys.stderr)
            continue
        yield getattr(route, "methods", None), prefix + path


def fastapi_routes():
    try:
        from mlflow.server.fastapi_app import app
    except ImportError:  # MLflow without the FastAPI launcher
        return
    for methods, path in _walk(app.routes):
        if not methods:
            print(f"# route without methods (websocket?): {path}", file=sys.stderr)
            continue
        for method in methods:
            if method not in _SKIP_METHODS:
                yield method, _fastapi_path(path)


def main():
    rows = set(flask_routes()) | set(fastapi_routes())
    for method, path in sorted(rows, key=lambda r: (r[1], r[0])):
        print(f"{method} {path}")


if __name__ == "__main__":
    main()
