"""A local stand-in for the Hugging Face Hub's HTTP API, so huggingface_hub itself downloads into a real cache.

Serves model repos held in memory (path -> bytes, one commit each) at the endpoints
``snapshot_download`` and ``HfApi`` call: repo info (``/api/models/ORG/NAME/revision/REV``),
the recursive tree listing, and ``/ORG/NAME/resolve/REV/PATH`` (HEAD and GET) with the
headers the hub sends (``X-Repo-Commit``, ``ETag``, ``Content-Length``). As on the hub,
weight files are LFS files (ETag = sha256) and the others git blobs (ETag = git blob sha1),
so the cache gets its ``blobs/`` names the same way. Point huggingface_hub at it with
``HF_ENDPOINT=<LocalHub.url>``.
"""

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

LFS_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".msgpack", ".onnx", ".pb")


class LocalHub:
    def __init__(self, repos: dict):
        """``repos``: repo id -> (commit hash, {path: bytes}); the commit is what ``main`` points at."""
        self.repos = repos
        self.requested = []  # "METHOD path" of every request, to check what was fetched
        handler = type("Handler", (_Handler,), {"hub": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def downloaded(self) -> set:
        """Repo paths whose content was sent (GET on resolve/)."""
        return {r.split("/resolve/", 1)[1].split("/", 1)[1] for r in self.requested
                if r.startswith("GET") and "/resolve/" in r}


def git_blob_sha1(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _etag(path: str, content: bytes) -> str:
    return hashlib.sha256(content).hexdigest() if path.endswith(LFS_SUFFIXES) else git_blob_sha1(content)


class _Handler(BaseHTTPRequestHandler):
    hub: LocalHub

    def log_message(self, *args):  # quiet test output
        pass

    def do_HEAD(self):
        self._serve(send_body=False)

    def do_GET(self):
        self._serve(send_body=True)

    def _serve(self, send_body: bool):
        path = unquote(urlparse(self.path).path)
        self.hub.requested.append(f"{self.command} {path}")
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] in ("revision", "tree"):
            repo = self._repo("/".join(parts[2:4]), parts[5])
            if repo is not None:
                commit, files = repo
                if parts[4] == "revision":
                    body = {"id": "/".join(parts[2:4]), "sha": commit, "private": False,
                            "siblings": [{"rfilename": p} for p in sorted(files)]}
                else:
                    body = [self._tree_entry(p, c) for p, c in sorted(files.items())]
                self._reply(200, json.dumps(body).encode(), {"Content-Type": "application/json"}, send_body)
        elif len(parts) >= 5 and parts[2] == "resolve":
            repo = self._repo("/".join(parts[:2]), parts[3])
            if repo is not None:
                commit, files = repo
                name = "/".join(parts[4:])
                if name not in files:
                    self._reply(404, b"", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}, send_body)
                    return
                self._reply(200, files[name], {"X-Repo-Commit": commit, "ETag": f'"{_etag(name, files[name])}"'},
                            send_body)
        else:
            self._reply(404, b"", {}, send_body)

    def _repo(self, repo_id: str, revision: str):
        if repo_id not in self.hub.repos:
            self._reply(404, b"", {"X-Error-Code": "RepoNotFound"}, self.command == "GET")
            return None
        commit, files = self.hub.repos[repo_id]
        if revision not in ("main", commit):
            self._reply(404, b"", {"X-Error-Code": "RevisionNotFound"}, self.command == "GET")
            return None
        return commit, files

    @staticmethod
    def _tree_entry(path: str, content: bytes) -> dict:
        entry = {"type": "file", "path": path, "size": len(content), "oid": git_blob_sha1(content)}
        if path.endswith(LFS_SUFFIXES):
            entry["lfs"] = {"oid": hashlib.sha256(content).hexdigest(), "size": len(content), "pointerSize": 134}
        return entry

    def _reply(self, status: int, body: bytes, headers: dict, send_body: bool):
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(key, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)
