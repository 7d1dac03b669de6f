"""Who may use `edge-xray serve`: this device only, or anyone with the access code.

- Bound to this device's own addresses (LOCAL_HOSTS), the server answers only requests whose Host is
  this device (a web page elsewhere cannot reach it through DNS rebinding), and needs no code.
- On any other address an access code is needed: given (`--pin`, $EDGE_XRAY_PIN, or `--pin-file`, so
  that it need not show in `ps`), or generated and printed at start. Every request carries it: the
  header X-Access-Code, or the cookie the page's code form sets. Repeated wrong codes from one address
  lock it out for a while.
- Form posts from other web sites are refused (their Origin differs); after the code form, the
  browser goes back only to a path on this server (`safe_next`).
"""

from __future__ import annotations

import hmac
import secrets
import time
import unicodedata
from collections import defaultdict, deque
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .errors import UsageError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")  # the hosts that need no access code
ACCESS_HEADER = "X-Access-Code"
ACCESS_COOKIE = "edge_xray_access"
PIN_ENV = "EDGE_XRAY_PIN"
CODE_DIGITS = 8  # of a generated access code
MIN_CODE_LENGTH = 4
MAX_CODE_LENGTH = 128
MAX_WRONG_CODES = 10  # per client address within LOCKOUT_SECONDS; then refused until the window passes
LOCKOUT_SECONDS = 60
MAX_TRACKED = 10000  # client addresses remembered for the lockout


def is_local(host: str) -> bool:
    return host.strip("[]").lower() in LOCAL_HOSTS


def check_pin(pin: str, source: str = "--pin") -> str:
    pin = str(pin)
    if not MIN_CODE_LENGTH <= len(pin) <= MAX_CODE_LENGTH or not pin.isprintable() or any(c.isspace() for c in pin):
        raise UsageError(f"{source} must be {MIN_CODE_LENGTH} to {MAX_CODE_LENGTH} characters, without spaces")
    return pin


def read_pin_file(path) -> str:
    """The access code in the first line of the file PATH (a file only its owner should read)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="strict")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read the access code file {path}: {getattr(e, 'strerror', None) or e}") from None
    lines = text.splitlines()
    return check_pin(lines[0].strip() if lines else "", "the access code file")


def access_code(host: str, pin: str | None = None) -> str | None:
    """The access code a server on HOST needs: PIN when given; else None on this device's own
    addresses, and a new random one (CODE_DIGITS digits) on any other."""
    if pin is not None:
        return check_pin(pin)
    if is_local(host):
        return None
    return f"{secrets.randbelow(10 ** CODE_DIGITS):0{CODE_DIGITS}d}"


def _on_this_server(t: str) -> bool:
    if not t.startswith("/") or t.startswith("//") or "\\" in t or len(t) > 2000:
        return False
    if any(c.isspace() or unicodedata.category(c)[0] in "CZ" for c in t):
        return False
    parts = urlsplit(t)
    return not parts.scheme and not parts.netloc


def safe_next(target) -> str:
    """TARGET when it is a path on this server ("/", "/?show=1"), else "/". Anything a browser could
    read as another host is refused, percent-encoded or not: "//host", "/\\host", and control
    characters or spaces, which browsers drop from URLs ("/\t/host" becomes "//host")."""
    t = str(target or "")
    return t if _on_this_server(t) and _on_this_server(unquote(t)) else "/"


class Access:
    """The access code (None: this device only), the cookie of a correct code, and the lockout."""

    def __init__(self, pin: str | None):
        self.pin = pin
        self.token = secrets.token_urlsafe(32)  # the cookie of a correct code; new at each start
        self.wrong_codes: defaultdict[str, deque] = defaultdict(deque)

    def check_code(self, given: str) -> bool:
        return hmac.compare_digest(given.encode("utf-8", "replace"), self.pin.encode("utf-8"))

    def check_cookie(self, cookie: str | None) -> bool:
        return bool(cookie) and hmac.compare_digest(cookie.encode("utf-8", "replace"), self.token.encode())

    def locked_out(self, address: str) -> bool:
        q = self.wrong_codes.get(address)
        if not q:
            return False
        while q and q[0] < time.monotonic() - LOCKOUT_SECONDS:
            q.popleft()
        return len(q) >= MAX_WRONG_CODES

    def wrong_code(self, address: str):
        if len(self.wrong_codes) > MAX_TRACKED:
            self.wrong_codes.clear()
        self.wrong_codes[address].append(time.monotonic())

    def refusal(self, request) -> tuple | None:
        """(HTTP status, message) when REQUEST may not be answered, else None."""
        origin = request.headers.get("Origin")
        if request.method == "POST" and origin and origin.rstrip("/") != request.host_url.rstrip("/"):
            return 403, "refused: a request from another web site"
        if self.pin is None:
            host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
            if not is_local(host):
                return 403, ("this server answers only on this device; to serve the network start it "
                             "with --host (an access code is then needed)")
            return None
        if request.endpoint in ("login", "login_form", "favicon"):
            return None  # the code form checks the code itself
        if self.check_cookie(request.cookies.get(ACCESS_COOKIE)):
            return None
        address = request.remote_addr or "?"
        if self.locked_out(address):
            return 429, f"too many wrong access codes: wait {LOCKOUT_SECONDS} seconds"
        given = request.headers.get(ACCESS_HEADER)
        if given is None:
            return 401, ("access code needed: enter the code shown on the device "
                         f"(programs: send it in the {ACCESS_HEADER} header)")
        if not self.check_code(given):
            self.wrong_code(address)
            return 403, "wrong access code"
        return None
