"""A stand-in for the Kubernetes API server's read-only discovery, so that
`kubectl apply --dry-run=client` can run with no cluster.

Client-side dry run still asks a server two things: discovery (which
resource, and whether namespaced, serves each apiVersion/kind) and, per
object, a GET to see whether it exists. This server answers discovery from
the table below and 404 to every GET, so kubectl decodes each object, maps
it to its resource and reports it "created (dry run)". It accepts no writes
and stores nothing. It is not a Kubernetes API server: no admission, no
defaulting, no server-side validation happens here (kubernetes-validate
covers the schemas).

Listens on 127.0.0.1 only, on a port the OS picks.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# (group, version) -> [(kind, plural, namespaced)]
RESOURCES: dict[tuple[str, str], list[tuple[str, str, bool]]] = {
    ("", "v1"): [
        ("Namespace", "namespaces", False),
        ("ServiceAccount", "serviceaccounts", True),
        ("ConfigMap", "configmaps", True),
        ("Secret", "secrets", True),
        ("Service", "services", True),
        ("Pod", "pods", True),
        ("PersistentVolumeClaim", "persistentvolumeclaims", True),
    ],
    ("apps", "v1"): [
        ("Deployment", "deployments", True),
        ("StatefulSet", "statefulsets", True),
        ("DaemonSet", "daemonsets", True),
    ],
    ("batch", "v1"): [("Job", "jobs", True), ("CronJob", "cronjobs", True)],
    ("policy", "v1"): [("PodDisruptionBudget", "poddisruptionbudgets", True)],
    ("autoscaling", "v2"): [("HorizontalPodAutoscaler", "horizontalpodautoscalers", True)],
    ("networking.k8s.io", "v1"): [("NetworkPolicy", "networkpolicies", True), ("Ingress", "ingresses", True)],
}
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


def known(api_version: str, kind: str) -> bool:
    group, _, version = api_version.rpartition("/")
    return any(k == kind for k, _, _ in RESOURCES.get((group, version), []))


def _resource_list(group: str, version: str) -> dict:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": [
            {
                "name": plural,
                "singularName": kind.lower(),
                "namespaced": namespaced,
                "kind": kind,
                "verbs": VERBS,
            }
            for kind, plural, namespaced in RESOURCES[(group, version)]
        ],
    }


def _routes() -> dict[str, dict]:
    routes: dict[str, dict] = {
        "/version": {"major": "1", "minor": "32", "gitVersion": "v1.32.0-stub", "platform": "linux/amd64"},
        "/api": {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
        },
        "/apis": {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [
                {
                    "name": group,
                    "versions": [{"groupVersion": f"{group}/{version}", "version": version}],
                    "preferredVersion": {"groupVersion": f"{group}/{version}", "version": version},
                }
                for group, version in RESOURCES
                if group
            ],
        },
    }
    for group, version in RESOURCES:
        path = f"/apis/{group}/{version}" if group else f"/api/{version}"
        routes[path] = _resource_list(group, version)
    return routes


class _Handler(BaseHTTPRequestHandler):
    routes = _routes()

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        body = self.routes.get(path)
        if body is None:
            self._send(404, {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": f"{path} not found", "reason": "NotFound", "code": 404,
            })  # fmt: skip
        else:
            self._send(200, body)

    def _refuse(self) -> None:
        self._send(405, {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "the stub API server accepts no writes", "reason": "MethodNotAllowed", "code": 405,
        })  # fmt: skip

    do_POST = do_PUT = do_PATCH = do_DELETE = _refuse  # noqa: N815

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


class StubApiServer:
    """`with StubApiServer() as url:` serves until the block ends."""

    def __enter__(self) -> str:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
