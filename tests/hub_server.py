"""A tiny stand-in for the Hugging Face Hub on 127.0.0.1, for tests (stdlib only).

Serves `root/<namespace>/<repo>/<file>` with the Hub's file protocol, as huggingface_hub 2.4 uses it:
  HEAD/GET /{repo_id}/resolve/{revision}/{filename}   headers X-Repo-Commit, ETag (quoted sha256), Content-Length;
                                                      404 + X-Error-Code RepoNotFound / RevisionNotFound / EntryNotFound
and, for `push`, the calls `HfApi.create_repo` + `upload_folder` make for small ("regular", not LFS/xet) files:
  POST /api/repos/create, /api/validate-yaml, /api/models/{repo_id}/preupload/{rev}, .../commit/{rev} (NDJSON).
Every revision in `revisions` (and its commit) serves the same tree. `mode` "401" answers 401 (bad token),
"hang" sleeps `hang_s` before answering anything, "hang_get" answers HEAD but stalls every GET.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"
RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>[^?]+)$")
API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/(?P<op>preupload|commit)/(?P<rev>[^/?]+)")


class HubServer:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.revisions = {"main": COMMIT}  # branch or tag -> commit (X-Repo-Commit); commits resolve to themselves
        self.mode = "ok"  # "ok" | "401" | "hang" | "hang_get"
        self.hang_s = 30.0
        self.requests: list[tuple[str, str]] = []  # (method, path) in arrival order
        self.connections: set[socket.socket] = set()  # open keep-alive connections, cut by stop()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self._httpd.handle_error = lambda request, address: None  # a stalled reply to a client that gave up
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut open connections too (the client keeps them alive), as a dead server would."""
        self._httpd.shutdown()
        self._httpd.server_close()
        for connection in list(self.connections):
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _make_handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            hub.connections.add(self.connection)

        def finish(self) -> None:
            hub.connections.discard(self.connection)
            super().finish()

        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

        def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _error(self, status: int, code: str) -> None:
            self._reply(status, json.dumps({"error": code}).encode(), {"X-Error-Code": code})

        def _gate(self) -> bool:
            hub.requests.append((self.command, self.path))
            if hub.mode == "hang" or (hub.mode == "hang_get" and self.command == "GET"):
                time.sleep(hub.hang_s)
            if hub.mode == "401":
                self._reply(401, b"{}", {"X-Error-Message": "Invalid credentials in Authorization header"})
            return hub.mode in ("ok", "hang_get")

        def do_HEAD(self) -> None:
            if not self._gate():
                return
            match = RESOLVE.match(self.path)
            if match is None:
                return self._error(404, "RepoNotFound")
            repo, rev, name = match["repo"], match["rev"], match["file"]
            path = hub.root / repo / name
            if not (hub.root / repo).is_dir():
                return self._error(404, "RepoNotFound")
            commit = hub.revisions.get(rev) or (rev if rev in hub.revisions.values() else None)
            if commit is None:
                return self._error(404, "RevisionNotFound")
            if ".." in name.split("/") or not path.is_file():
                return self._reply(404, b"{}", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit})
            body = path.read_bytes()
            self._reply(200, body, {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha256(body).hexdigest()}"'})

        do_GET = do_HEAD

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if not self._gate():
                return
            if self.path.startswith("/api/repos/create"):
                payload = json.loads(body)
                repo = hub.root / payload["organization"] / payload["name"]
                status = 409 if repo.is_dir() else 200
                repo.mkdir(parents=True, exist_ok=True)
                return self._reply(status, json.dumps({"url": f"{hub.url}/{repo.parent.name}/{repo.name}"}).encode())
            if self.path.startswith("/api/validate-yaml"):  # upload_folder checks a README.md's YAML header
                return self._reply(200, b"{}")
            match = API.match(self.path)
            if match is None or not (hub.root / match["repo"]).is_dir():
                return self._error(404, "RepoNotFound")
            if match["op"] == "preupload":
                files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                         for f in json.loads(body)["files"]]
                return self._reply(200, json.dumps({"files": files}).encode())
            for line in body.splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    target = hub.root / match["repo"] / item["value"]["path"]
                    target.write_bytes(base64.b64decode(item["value"]["content"]))
            url = f"{hub.url}/{match['repo']}/commit/{COMMIT}"
            self._reply(200, json.dumps({"commitUrl": url, "commitOid": COMMIT, "pullRequestUrl": None}).encode())

    return Handler
