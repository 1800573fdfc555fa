"""TEST DOUBLE -- this is NOT a Hugging Face Hub and not a general-purpose server.

A small stdlib `ThreadingHTTPServer` on 127.0.0.1 that answers the requests `huggingface_hub` makes when it pushes
and pulls a model repo, so the push path can be tested over real HTTP with no internet. No installable server
accepts uploads (see shared/notes/hub-testing.md), hence this double. It answers:

    POST /api/repos/create                               create a repo (409 if it exists)
    POST /api/validate-yaml                              parses the model card's YAML for real (PyYAML)
    POST /api/models/{repo}/preupload/{rev}              lfs for *.safetensors and big files, regular otherwise
    POST /{repo}.git/info/lfs/objects/batch              basic transfer, upload hrefs point back here
    PUT  /__lfs/{oid}                                    checks the body's sha256 against the oid
    POST /api/models/{repo}/commit/{rev}                 NDJSON: header, file, lfsFile, deletedFile, deletedFolder
    GET  /api/models/{repo}[/revision/{rev}]             sha, siblings, tags, library_name, lastModified
    GET  /api/models/{repo}/tree/{rev}[/{path}]          files (and folders) with git oids / lfs info
    HEAD|GET /{repo}/resolve/{rev}/{path}                X-Repo-Commit, ETag, X-Linked-Etag, X-Linked-Size
    GET  /api/models?author=&filter=&search=             list models
    GET  /api/whoami-v2

Writes need `Authorization: Bearer <token>` (401 without it, 401 "Invalid credentials" with a wrong one); reads of a
private repo need it too. Errors carry the `X-Error-Code` header the client maps to its exception types.
Everything lives on disk under `root` (blobs by sha256, one JSON file per repo, an access log without headers), so a
test can grep it.
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
from urllib.parse import parse_qs, unquote, urlparse

LFS_MIN_SIZE = 10 * 1024 * 1024
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HubDouble:
    """`with HubDouble(tmp, token="hf_x") as hub: ...`; `hub.url` is the HF_ENDPOINT to give the client."""

    def __init__(self, root: Path, token: str, port: int | None = None):
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        (self.root / "repos").mkdir(parents=True, exist_ok=True)
        self.token = token
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "HubDouble":
        double = self

        class Handler(_Handler):
            hub = double

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------------ storage
    def _repo_file(self, repo_id: str) -> Path:
        return self.root / "repos" / (repo_id.replace("/", "__") + ".json")

    def repo(self, repo_id: str) -> dict | None:
        p = self._repo_file(repo_id)
        return json.loads(p.read_text()) if p.exists() else None

    def _save_repo(self, repo_id: str, repo: dict) -> None:
        p = self._repo_file(repo_id)
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps(repo, indent=1))
        tmp.replace(p)

    def put_blob(self, data: bytes) -> str:
        oid = hashlib.sha256(data).hexdigest()
        p = self.root / "blobs" / oid
        if not p.exists():
            p.write_bytes(data)
        return oid

    def blob(self, sha256: str) -> bytes:
        return (self.root / "blobs" / sha256).read_bytes()

    def create(self, repo_id: str, private: bool = False) -> None:
        repo = {"id": repo_id, "private": private, "commits": {}, "refs": {}, "created": _now()}
        self._save_repo(repo_id, repo)
        self.commit(repo_id, "initial commit", "", {".gitattributes": GITATTRIBUTES}, [])

    def commit(self, repo_id: str, summary: str, description: str, add: dict, delete: list[str],
               lfs: dict | None = None, branch: str = "main") -> str:
        """add: path -> bytes (regular) ; lfs: path -> (sha256, size) of an uploaded blob; delete: paths/folders."""
        with self.lock:
            repo = self.repo(repo_id)
            parent = repo["refs"].get(branch)
            files = dict(repo["commits"][parent]["files"]) if parent else {}
            for path in delete:
                if path.endswith("/"):
                    files = {p: f for p, f in files.items() if not p.startswith(path)}
                else:
                    files.pop(path, None)
            for path, data in add.items():
                files[path] = {"sha256": self.put_blob(data), "size": len(data), "git_oid": git_blob_oid(data), "lfs": False}
            for path, (sha, size) in (lfs or {}).items():
                pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {size}\n".encode()
                files[path] = {"sha256": sha, "size": size, "git_oid": git_blob_oid(pointer), "lfs": True,
                               "pointer_size": len(pointer)}
            body = json.dumps({"parent": parent, "summary": summary, "files": files}, sort_keys=True)
            oid = hashlib.sha1(body.encode() + str(time.time_ns()).encode()).hexdigest()
            repo["commits"][oid] = {"oid": oid, "parent": parent, "summary": summary, "description": description,
                                    "files": files, "date": _now()}
            repo["refs"][branch] = oid
            self._save_repo(repo_id, repo)
            return oid

    def head_files(self, repo_id: str, rev: str = "main") -> dict:
        repo = self.repo(repo_id)
        return repo["commits"][self.resolve_rev(repo, rev)]["files"]

    @staticmethod
    def resolve_rev(repo: dict, rev: str) -> str | None:
        rev = unquote(rev)
        if rev in repo["refs"]:
            return repo["refs"][rev]
        if rev in repo["commits"]:
            return rev
        return None

    def card_data(self, repo_id: str, commit: str) -> dict:
        import yaml

        f = self.repo(repo_id)["commits"][commit]["files"].get("README.md")
        if not f:
            return {}
        text = self.blob(f["sha256"]).decode()
        m = re.match(r"^---\n(.*?)\n---", text, re.S)
        return (yaml.safe_load(m.group(1)) or {}) if m else {}

    def log(self, line: str) -> None:
        with self.lock, open(self.root / "access.log", "a") as f:
            f.write(line + "\n")

    def requests(self) -> list[str]:
        p = self.root / "access.log"
        return p.read_text().splitlines() if p.exists() else []


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


class _Error(Exception):
    def __init__(self, status: int, code: str | None = None, message: str = "", **extra):
        self.status, self.code, self.message, self.extra = status, code, message, extra


class _Handler(BaseHTTPRequestHandler):
    hub: HubDouble
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # no stderr noise; the access log (no headers, so no token) is on disk
        pass

    # ------------------------------------------------------------------ plumbing
    def _auth(self) -> str | None:
        """None: anonymous; the token when valid; raises 401 for a wrong one."""
        h = self.headers.get("Authorization")
        if not h:
            return None
        if h != f"Bearer {self.hub.token}":
            raise _Error(401, None, "Invalid credentials in Authorization header")
        return h

    def _need_auth(self) -> None:
        if self._auth() is None:
            raise _Error(401, None, "You must be authenticated to write (no Authorization header)")

    def _body(self) -> bytes:
        self._consumed = True
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, ctype="application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj, status: int = 200, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _dispatch(self, method: str) -> None:
        url = urlparse(self.path)
        self._query = parse_qs(url.query)
        self._consumed = False
        status = 200
        try:
            handled = False
            for pattern, fn in self.ROUTES.get(method, []):
                m = re.fullmatch(pattern, url.path)
                if m:
                    fn(self, *[unquote(g) if g is not None else None for g in m.groups()])
                    handled = True
                    break
            if not handled:
                raise _Error(404, None, f"no route for {method} {url.path}")
        except _Error as e:
            status = e.status
            if method in ("POST", "PUT") and not self._consumed:
                # Read the body before answering: closing on an unread body resets the connection while the client
                # is still sending, and it then sees a protocol error instead of this status (a flaky 401 test).
                try:
                    self._body()
                except (OSError, ValueError):
                    self.close_connection = True
            headers = {"X-Error-Message": e.message}
            if e.code:
                headers["X-Error-Code"] = e.code
            self._json({"error": e.message, **e.extra}, e.status, headers)
        self.hub.log(f"{method} {url.path} {status}")

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    # ------------------------------------------------------------------ reads
    def _readable(self, repo_id: str) -> dict:
        repo = self.hub.repo(repo_id)
        if repo is None:
            raise _Error(404, "RepoNotFound", "Repository not found")
        if repo["private"] and self._auth() is None:
            raise _Error(401, "RepoNotFound", "Repository not found")
        return repo

    def _commit(self, repo: dict, rev: str) -> dict:
        oid = self.hub.resolve_rev(repo, rev)
        if oid is None:
            raise _Error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return repo["commits"][oid]

    def _info(self, repo: dict, commit: dict) -> dict:
        card = self.hub.card_data(repo["id"], commit["oid"])
        tags = list(card.get("tags") or [])
        if card.get("library_name"):
            tags.insert(0, card["library_name"])
        return {"_id": repo["id"], "id": repo["id"], "modelId": repo["id"], "author": repo["id"].split("/")[0],
                "sha": commit["oid"], "private": repo["private"], "gated": False, "disabled": False,
                "lastModified": commit["date"], "createdAt": repo["created"], "tags": tags,
                "library_name": card.get("library_name"), "downloads": 0, "likes": 0,
                "siblings": [{"rfilename": p} for p in sorted(commit["files"])], "cardData": card or None}

    def model_info(self, repo_id, rev=None):
        repo = self._readable(repo_id)
        self._json(self._info(repo, self._commit(repo, rev or "main")))

    def list_models(self):
        q = self._query
        author, search = (q.get("author") or [None])[0], (q.get("search") or [None])[0]
        wanted = set(q.get("filter", []))
        out = []
        for p in sorted((self.hub.root / "repos").glob("*.json")):
            repo = json.loads(p.read_text())
            if repo["private"] and self._auth() is None:
                continue
            info = self._info(repo, repo["commits"][repo["refs"]["main"]])
            if author and info["author"] != author or search and search not in info["id"]:
                continue
            if not wanted <= set(info["tags"]):
                continue
            out.append({k: info[k] for k in ("_id", "id", "modelId", "author", "lastModified", "tags", "library_name",
                                            "private", "downloads", "likes", "createdAt")})
        self._json(out)

    def tree(self, repo_id, rev, path):
        repo = self._readable(repo_id)
        files = self._commit(repo, rev)["files"]
        prefix = (path.strip("/") + "/") if path else ""
        recursive = (self._query.get("recursive") or ["false"])[0].lower() == "true"
        out, dirs = [], set()
        for p, f in sorted(files.items()):
            if not p.startswith(prefix):
                continue
            rest = p[len(prefix):]
            if "/" in rest:
                parts = rest.split("/")
                for i in range(1, len(parts) if recursive else 2):
                    dirs.add(prefix + "/".join(parts[:i]))
                if not recursive:
                    continue
            entry = {"type": "file", "oid": f["git_oid"], "size": f["size"], "path": p}
            if f["lfs"]:
                entry["lfs"] = {"oid": f["sha256"], "size": f["size"], "pointerSize": f["pointer_size"]}
            out.append(entry)
        if prefix and not out and not dirs:
            raise _Error(404, "EntryNotFound", f"{path} does not exist")
        out += [{"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d} for d in sorted(dirs)]
        self._json(out)

    def resolve(self, repo_id, rev, path):
        repo = self._readable(repo_id)
        commit = self._commit(repo, rev)
        f = commit["files"].get(path)
        if f is None:
            raise _Error(404, "EntryNotFound", f"{path} does not exist at {rev}")
        headers = {"X-Repo-Commit": commit["oid"], "ETag": f'"{f["git_oid"]}"'}
        if f["lfs"]:
            headers.update({"X-Linked-Etag": f'"{f["sha256"]}"', "X-Linked-Size": str(f["size"])})
        self._send(200, self.hub.blob(f["sha256"]), headers, "application/octet-stream")

    def whoami(self):
        if self._auth() is None:
            raise _Error(401, None, "Invalid credentials in Authorization header")
        self._json({"type": "user", "name": "ticketkit-tester", "auth": {"type": "access_token"}})

    # ------------------------------------------------------------------ writes
    def create_repo(self):
        self._need_auth()
        body = json.loads(self._body() or b"{}")
        repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
        if "/" not in repo_id:
            raise _Error(400, None, "the double needs a namespace: user/repo")
        if self.hub.repo(repo_id) is not None:
            raise _Error(409, None, "You already created this model repo", url=f"{self.hub.url}/{repo_id}")
        private = body.get("visibility") == "private" or bool(body.get("private"))
        self.hub.create(repo_id, private=private)
        self._json({"url": f"{self.hub.url}/{repo_id}", "name": repo_id, "id": repo_id})

    def validate_yaml(self):
        import yaml

        body = json.loads(self._body())
        m = re.match(r"^---\n(.*?)\n---", body.get("content", ""), re.S)  # the card's front matter, as the Hub does
        try:
            data = yaml.safe_load(m.group(1)) if m else None
            errors = [] if data is None or isinstance(data, dict) else [{"message": "metadata is not a mapping"}]
        except yaml.YAMLError as e:
            errors = [{"message": str(e).splitlines()[0]}]
        if errors:
            raise _Error(400, None, f"Invalid metadata in README.md: {errors[0]['message']}")
        self._json({"errors": [], "warnings": []})

    def _writable(self, repo_id: str) -> dict:
        self._need_auth()
        repo = self.hub.repo(repo_id)
        if repo is None:
            raise _Error(404, "RepoNotFound", "Repository not found")
        return repo

    def preupload(self, repo_id, rev):
        repo = self._writable(repo_id)
        files = self._commit(repo, rev)["files"]
        out = []
        for f in json.loads(self._body())["files"]:
            lfs = f["path"].endswith(".safetensors") or f["size"] >= LFS_MIN_SIZE
            have = files.get(f["path"])
            oid = (have["sha256"] if have["lfs"] else have["git_oid"]) if have else None
            out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        self._json({"files": out, "commitOid": self._commit(repo, rev)["oid"]})

    def lfs_batch(self, repo_id):
        self._writable(repo_id)
        body = json.loads(self._body())
        objects = []
        for o in body["objects"]:
            if (self.hub.root / "blobs" / o["oid"]).exists():
                objects.append({"oid": o["oid"], "size": o["size"]})  # already stored: nothing to upload
            else:
                objects.append({"oid": o["oid"], "size": o["size"], "authenticated": True,
                                "actions": {"upload": {"href": f"{self.hub.url}/__lfs/{o['oid']}", "expires_in": 3600}}})
        self._json({"transfer": "basic", "objects": objects}, headers={"Content-Type": "application/vnd.git-lfs+json"})

    def lfs_put(self, oid):
        data = self._body()
        if hashlib.sha256(data).hexdigest() != oid:
            raise _Error(400, None, "uploaded bytes do not match the LFS oid")
        self.hub.put_blob(data)
        self._send(200, b"")

    def commit(self, repo_id, rev):
        repo = self._writable(repo_id)
        if self.hub.resolve_rev(repo, rev) is None:
            raise _Error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        summary, description, add, lfs, delete = "", "", {}, {}, []
        for line in self._body().decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                summary, description = value.get("summary", ""), value.get("description", "")
            elif key == "file":
                add[value["path"]] = base64.b64decode(value["content"]) if value.get("encoding") == "base64" else value["content"].encode()
            elif key == "lfsFile":
                if not (self.hub.root / "blobs" / value["oid"]).exists():
                    raise _Error(422, None, f"LFS object {value['oid']} was never uploaded")
                lfs[value["path"]] = (value["oid"], value["size"])
            elif key == "deletedFile":
                delete.append(value["path"])
            elif key == "deletedFolder":
                delete.append(value["path"].rstrip("/") + "/")
            else:
                raise _Error(400, None, f"unknown commit operation {key!r}")
        oid = self.hub.commit(repo_id, summary, description, add, delete, lfs, branch=unquote(rev))
        self._json({"success": True, "commitOid": oid, "commitUrl": f"{self.hub.url}/{repo_id}/commit/{oid}",
                    "commitMessage": summary})

    REPO = r"([^/]+/[^/]+)"
    ROUTES = {
        "GET": [
            (r"/api/models", list_models),
            (r"/api/whoami-v2", whoami),
            (rf"/api/models/{REPO}/revision/([^/]+)", model_info),
            (rf"/api/models/{REPO}/tree/([^/]+)(?:/(.*))?", tree),
            (rf"/api/models/{REPO}", model_info),
            (rf"/{REPO}/resolve/([^/]+)/(.+)", resolve),
        ],
        "HEAD": [(rf"/{REPO}/resolve/([^/]+)/(.+)", resolve)],
        "POST": [
            (r"/api/repos/create", create_repo),
            (r"/api/validate-yaml", validate_yaml),
            (rf"/api/models/{REPO}/preupload/([^/]+)", preupload),
            (rf"/{REPO}\.git/info/lfs/objects/batch", lfs_batch),
            (rf"/api/models/{REPO}/commit/([^/]+)", commit),
        ],
        "PUT": [(r"/__lfs/([0-9a-f]{64})", lfs_put)],
    }
