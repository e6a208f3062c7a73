"""Serving the web view: bind, announce, open the browser, stop cleanly.

The socket is bound here, before the server starts, so ``port=0`` is a free port
known at once and the address printed is the one listening (the first line a
caller reads). Loopback by default; any other address serves the store to
whoever can reach it, so :func:`is_loopback` lets the CLI warn (and on loopback the
application answers only requests for a loopback Host: DNS rebinding, see :mod:`objstore.ui.app`). Ctrl-C and
SIGTERM end the server gracefully (uvicorn finishes the requests in flight) and
:func:`serve` returns normally, so the command exits 0.
"""

from __future__ import annotations

import signal
import socket
import threading
import webbrowser
from collections.abc import Callable

try:
    import uvicorn
except ImportError as exc:
    from objstore.errors import InvalidInput

    raise InvalidInput("objstore ui needs the 'ui' extra: pip install 'objstore[ui]'") from exc

from objstore.errors import InvalidInput
from objstore.model.store import Store
from objstore.ui.app import UI, is_loopback

__all__ = ["address", "bind", "is_loopback", "serve"]


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (0: a free port), or InvalidInput saying why not."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except (OSError, OverflowError) as exc:
        raise InvalidInput(f"cannot listen on {host}:{port} ({exc.strerror if isinstance(exc, OSError) else exc}); "
                           "pick another --port, or --port 0 for a free one") from None
    return sock


def address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(store: Store, *, host: str = "127.0.0.1", port: int = 0, allow_edits: bool = False,
          open_browser: bool = True, announce: Callable[[str], None] = print) -> None:
    """Serve ``store`` until Ctrl-C or SIGTERM; ``announce`` gets the address first."""
    sock = bind(host, port)
    url = address(sock)
    ui = UI(store, allow_edits=allow_edits, loopback=is_loopback(host))
    server = uvicorn.Server(uvicorn.Config(ui.app, log_level="warning", access_log=False, lifespan="off"))
    # uvicorn handles both signals while it runs, then raises them again once it has
    # stopped; these handlers take a signal that comes before it starts (the address
    # is already printed) and that second delivery, so every stop is clean.
    def stop(*_: object) -> None:
        server.should_exit = True

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    announce(url)
    if open_browser:
        threading.Timer(0.5, webbrowser.open, (url,)).start()
    try:
        server.run(sockets=[sock])
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        sock.close()
