"""Policy test over rendered Kubernetes manifests (plain dicts).

`check(objects, expect)` returns every violation; `self_test()` feeds it
manifests that break each rule and fails unless every breach is reported
(and a compliant set passes), so a rule that silently stopped matching
cannot go unnoticed.

Rules (code: what it requires):
  image-tag        every image pinned by a tag other than `latest` (or by digest)
  resources        every container, init containers too: cpu and memory requests and limits
  probes           every container (init containers excepted): readiness and liveness probes
  probe-port       a probe's named port is one of the container's ports
  non-root         runAsNonRoot true (pod or container), no runAsUser 0
  read-only-root   readOnlyRootFilesystem true on every container
  no-escalation    allowPrivilegeEscalation false on every container
  drop-all         capabilities drop ALL, add nothing
  seccomp          seccompProfile RuntimeDefault or Localhost (pod or container)
  pdb              every Deployment and StatefulSet is selected by a PodDisruptionBudget
  replicas         at least `min_replicas` pods (replicas, or the HPA's minReplicas)
  hpa              every HorizontalPodAutoscaler targets a rendered object; the
                   workloads named in `hpa_for` have one
  service-selector every Service selects the pods of some rendered workload
  secret-value     no Secret carries a committed real value: where Secrets may be
                   rendered at all (`secrets="dev-only"`), every value contains
                   "dev-only"; elsewhere (`secrets="none"`) any Secret is a violation
  plain-credential no credential in plain sight: no env `value` or ConfigMap entry
                   with a URL carrying a password, no *PASSWORD/*TOKEN/*SECRET env
                   var given as a literal
  config-ref       every referenced ConfigMap is rendered
  secret-ref       every Secret referenced (and not `optional`) is rendered, unless the
                   overlay's Secrets are created out of band (`external_secrets=True`:
                   listed instead)

An object may opt out of a rule with the annotation
`orderflow.io/policy-exempt: <code>[,<code>...]`; exemptions are reported.
"""

from __future__ import annotations

import base64
import copy
import re
from dataclasses import dataclass, field

DEV_MARKER = "dev-only"
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}
EXEMPT_ANNOTATION = "orderflow.io/policy-exempt"
CREDENTIAL_URL = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:([^/\s@]+)@", re.IGNORECASE)
SECRET_ENV_NAME = re.compile(r"(PASSWORD|PASSWD|TOKEN|SECRET|API_KEY)$", re.IGNORECASE)


@dataclass(frozen=True)
class Violation:
    code: str
    obj: str
    message: str

    def __str__(self) -> str:
        return f"[{self.code}] {self.obj}: {self.message}"


@dataclass
class Expect:
    """What an overlay promises beyond the common rules."""

    secrets: str = "none"  # "none" | "dev-only"
    external_secrets: bool = False
    min_replicas: int = 1
    hpa_for: tuple[str, ...] = ()


@dataclass
class Report:
    violations: list[Violation] = field(default_factory=list)
    exemptions: list[str] = field(default_factory=list)
    external_secrets: set[str] = field(default_factory=set)


def ref(obj: dict) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    name = meta.get("name", "?")
    return f"{obj.get('kind', '?')}/{ns + '/' if ns else ''}{name}"


def pod_spec(obj: dict) -> dict | None:
    """The pod spec of a workload (CronJob: its job's)."""
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    if kind in WORKLOAD_KINDS:
        return ((spec.get("template") or {}).get("spec")) or {}
    return None


def pod_labels(obj: dict) -> dict:
    if obj.get("kind") == "Pod":
        return (obj.get("metadata") or {}).get("labels") or {}
    spec = obj.get("spec") or {}
    if obj.get("kind") == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    return (((spec.get("template") or {}).get("metadata") or {}).get("labels")) or {}


def image_problem(image: str | None) -> str | None:
    """Why `image` is not pinned, or None when it is."""
    if not image:
        return "no image"
    if "@sha256:" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"image {image!r} has no tag (means latest)"
    tag = last.rsplit(":", 1)[1]
    if not tag or tag == "latest":
        return f"image {image!r} is tagged {tag or 'empty'!r}"
    return None


def selector_matches(match_labels: dict | None, labels: dict) -> bool:
    if not match_labels:
        return False
    return all(labels.get(k) == v for k, v in match_labels.items())


def check(objects: list[dict], expect: Expect) -> Report:
    report = Report()
    add = report.violations.append

    def exempt(obj: dict, code: str) -> bool:
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        codes = {c.strip() for c in annotations.get(EXEMPT_ANNOTATION, "").split(",") if c.strip()}
        if code in codes:
            report.exemptions.append(f"{ref(obj)}: {code}")
            return True
        return False

    by_kind: dict[str, list[dict]] = {}
    for obj in objects:
        by_kind.setdefault(obj.get("kind", "?"), []).append(obj)

    def ns(obj: dict) -> str:
        return (obj.get("metadata") or {}).get("namespace") or ""

    def named(kind: str, namespace: str) -> set[str]:
        return {(o.get("metadata") or {}).get("name") for o in by_kind.get(kind, []) if ns(o) == namespace}

    workloads = [o for o in objects if o.get("kind") in WORKLOAD_KINDS]
    secret_refs: set[tuple[str, str, str]] = set()
    config_refs: set[tuple[str, str, str]] = set()

    for obj in workloads:
        spec = pod_spec(obj) or {}
        pod_sc = spec.get("securityContext") or {}
        where = ref(obj)
        for vol in spec.get("volumes") or []:
            if "secret" in vol:
                secret_refs.add((ns(obj), vol["secret"].get("secretName", ""), where))
            if "configMap" in vol:
                config_refs.add((ns(obj), vol["configMap"].get("name", ""), where))
        for is_init, container in [(True, c) for c in spec.get("initContainers") or []] + [
            (False, c) for c in spec.get("containers") or []
        ]:
            cname = f"{where} {'init container' if is_init else 'container'} {container.get('name')}"
            problem = image_problem(container.get("image"))
            if problem and not exempt(obj, "image-tag"):
                add(Violation("image-tag", cname, problem))

            resources = container.get("resources") or {}
            missing = [
                f"{part}.{res}"
                for part in ("requests", "limits")
                for res in ("cpu", "memory")
                if not (resources.get(part) or {}).get(res)
            ]
            if missing and not exempt(obj, "resources"):
                add(Violation("resources", cname, "missing " + ", ".join(missing)))

            if not is_init:
                absent = [p for p in ("readinessProbe", "livenessProbe") if not container.get(p)]
                if absent and not exempt(obj, "probes"):
                    add(Violation("probes", cname, "no " + " and no ".join(absent)))
                port_names = {p.get("name") for p in container.get("ports") or [] if p.get("name")}
                for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
                    probe = container.get(probe_name) or {}
                    for handler in ("httpGet", "tcpSocket"):
                        port = (probe.get(handler) or {}).get("port")
                        if isinstance(port, str) and port not in port_names:
                            add(Violation("probe-port", cname, f"{probe_name} uses port {port!r}, not a named port"))

            sc = container.get("securityContext") or {}
            non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
            user = sc.get("runAsUser", pod_sc.get("runAsUser"))
            if (non_root is not True or user == 0) and not exempt(obj, "non-root"):
                add(Violation("non-root", cname, f"runAsNonRoot={non_root!r}, runAsUser={user!r}"))
            if sc.get("readOnlyRootFilesystem") is not True and not exempt(obj, "read-only-root"):
                add(Violation("read-only-root", cname, "readOnlyRootFilesystem is not true"))
            if sc.get("allowPrivilegeEscalation") is not False and not exempt(obj, "no-escalation"):
                add(Violation("no-escalation", cname, "allowPrivilegeEscalation is not false"))
            caps = sc.get("capabilities") or {}
            if ("ALL" not in (caps.get("drop") or []) or caps.get("add")) and not exempt(obj, "drop-all"):
                add(Violation("drop-all", cname, f"capabilities {caps!r}: drop ALL and add nothing"))
            seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
            if seccomp not in ("RuntimeDefault", "Localhost") and not exempt(obj, "seccomp"):
                add(Violation("seccomp", cname, f"seccompProfile {seccomp!r}"))

            for env in container.get("env") or []:
                source = env.get("valueFrom") or {}
                if "secretKeyRef" in source and not source["secretKeyRef"].get("optional"):
                    secret_refs.add((ns(obj), source["secretKeyRef"].get("name", ""), cname))
                if "configMapKeyRef" in source:
                    config_refs.add((ns(obj), source["configMapKeyRef"].get("name", ""), cname))
                value = env.get("value")
                if isinstance(value, str):
                    if plain_credential(value) and not exempt(obj, "plain-credential"):
                        add(Violation("plain-credential", cname, f"env {env.get('name')} holds a URL with a password"))
                    if SECRET_ENV_NAME.search(env.get("name", "")) and not exempt(obj, "plain-credential"):
                        add(Violation("plain-credential", cname, f"env {env.get('name')} is a literal, not a secretKeyRef"))
            for source in container.get("envFrom") or []:
                if "secretRef" in source and not source["secretRef"].get("optional"):
                    secret_refs.add((ns(obj), source["secretRef"].get("name", ""), cname))
                if "configMapRef" in source:
                    config_refs.add((ns(obj), source["configMapRef"].get("name", ""), cname))

    # PodDisruptionBudgets and replica counts.
    pdbs = by_kind.get("PodDisruptionBudget", [])
    hpas = by_kind.get("HorizontalPodAutoscaler", [])
    for obj in workloads:
        if obj.get("kind") not in ("Deployment", "StatefulSet"):
            continue
        labels = pod_labels(obj)
        covered = any(
            ns(p) == ns(obj) and selector_matches(((p.get("spec") or {}).get("selector") or {}).get("matchLabels"), labels)
            for p in pdbs
        )
        if not covered and not exempt(obj, "pdb"):
            add(Violation("pdb", ref(obj), "no PodDisruptionBudget selects its pods"))
        name = (obj.get("metadata") or {}).get("name")
        hpa = next(
            (
                h
                for h in hpas
                if ns(h) == ns(obj)
                and ((h.get("spec") or {}).get("scaleTargetRef") or {}).get("kind") == obj.get("kind")
                and ((h.get("spec") or {}).get("scaleTargetRef") or {}).get("name") == name
            ),
            None,
        )
        replicas = (hpa["spec"].get("minReplicas", 1) if hpa else (obj.get("spec") or {}).get("replicas", 1))
        if replicas < expect.min_replicas and not exempt(obj, "replicas"):
            add(Violation("replicas", ref(obj), f"{replicas} replica(s), at least {expect.min_replicas} expected"))
        if name in expect.hpa_for and hpa is None:
            add(Violation("hpa", ref(obj), "no HorizontalPodAutoscaler"))
    for hpa in hpas:
        target = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
        if target.get("name") not in named(target.get("kind", ""), ns(hpa)):
            add(Violation("hpa", ref(hpa), f"targets {target.get('kind')}/{target.get('name')}, which is not rendered"))

    for svc in by_kind.get("Service", []):
        selector = (svc.get("spec") or {}).get("selector")
        if selector and not any(ns(w) == ns(svc) and selector_matches(selector, pod_labels(w)) for w in workloads):
            add(Violation("service-selector", ref(svc), f"selector {selector} matches no rendered pods"))

    for secret in by_kind.get("Secret", []):
        if expect.secrets == "none":
            add(Violation("secret-value", ref(secret), "Secrets are created out of band here; none may be committed"))
            continue
        for key, value in secret_values(secret):
            if DEV_MARKER not in value:
                add(Violation("secret-value", ref(secret), f"{key} does not contain {DEV_MARKER!r}: a real value?"))

    for cm in by_kind.get("ConfigMap", []):
        for key, value in ((cm.get("data") or {}).items()):
            if isinstance(value, str) and plain_credential(value) and not exempt(cm, "plain-credential"):
                add(Violation("plain-credential", ref(cm), f"{key} holds a URL with a password"))

    for namespace, name, user in sorted(config_refs):
        if name not in named("ConfigMap", namespace):
            add(Violation("config-ref", user, f"ConfigMap {name!r} is not rendered"))
    for namespace, name, user in sorted(secret_refs):
        if name in named("Secret", namespace):
            continue
        if expect.external_secrets:
            report.external_secrets.add(name)
        else:
            add(Violation("secret-ref", user, f"Secret {name!r} is not rendered"))
    return report


def secret_values(secret: dict) -> list[tuple[str, str]]:
    values = []
    for key, value in (secret.get("data") or {}).items():
        try:
            values.append((key, base64.b64decode(value or "").decode("utf-8", "replace")))
        except ValueError:
            values.append((key, "<not base64>"))
    values.extend((key, str(value)) for key, value in (secret.get("stringData") or {}).items())
    return values


def plain_credential(value: str) -> bool:
    """A URL with a password that is not an obvious dev placeholder."""
    return any(DEV_MARKER not in m.group(1) for m in CREDENTIAL_URL.finditer(value))


# ------------------------------------------------------------------ self-test

GOOD_DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "good", "namespace": "t"},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "good"}},
        "template": {
            "metadata": {"labels": {"app": "good"}},
            "spec": {
                "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
                "initContainers": [
                    {
                        "name": "migrate",
                        "image": "example/good:1.0.0",
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "1", "memory": "64Mi"}},
                        "securityContext": {
                            "readOnlyRootFilesystem": True,
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }
                ],
                "containers": [
                    {
                        "name": "good",
                        "image": "example/good:1.0.0",
                        "ports": [{"name": "grpc", "containerPort": 50051}],
                        "env": [{"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "good-db", "key": "url"}}}],
                        "readinessProbe": {"grpc": {"port": 50051}},
                        "livenessProbe": {"tcpSocket": {"port": "grpc"}},
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "1", "memory": "64Mi"}},
                        "securityContext": {
                            "readOnlyRootFilesystem": True,
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }
                ],
            },
        },
    },
}
GOOD_PDB = {
    "apiVersion": "policy/v1",
    "kind": "PodDisruptionBudget",
    "metadata": {"name": "good", "namespace": "t"},
    "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "good"}}},
}
GOOD_SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "good", "namespace": "t"},
    "spec": {"selector": {"app": "good"}, "ports": [{"port": 50051}]},
}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def dev_secret(name: str, **values: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "t"},
        "data": {k: b64(v) for k, v in values.items()},
    }


def self_test() -> list[str]:
    """Failures of the policy itself (empty when every rule bites)."""
    failures = []

    def codes(objects: list[dict], expect: Expect) -> set[str]:
        return {v.code for v in check(objects, expect).violations}

    good = [GOOD_DEPLOYMENT, GOOD_PDB, GOOD_SERVICE, dev_secret("good-db", url="postgres://u:dev-only-pw@db/x")]
    dev = Expect(secrets="dev-only", min_replicas=2)
    found = check(good, dev).violations
    if found:
        failures.append("a compliant set was flagged: " + "; ".join(map(str, found)))
    prod_found = check(good[:3], Expect(external_secrets=True, min_replicas=2, hpa_for=()))
    if prod_found.violations or prod_found.external_secrets != {"good-db"}:
        failures.append(f"external Secrets: {prod_found.violations} {prod_found.external_secrets}")

    bad = copy.deepcopy(GOOD_DEPLOYMENT)
    bad["metadata"]["name"] = "bad"
    bad["spec"]["replicas"] = 1
    bad["spec"]["selector"]["matchLabels"] = {"app": "bad"}
    tpl = bad["spec"]["template"]
    tpl["metadata"]["labels"] = {"app": "bad"}
    tpl["spec"]["securityContext"] = {}
    init = tpl["spec"]["initContainers"][0]
    init["image"] = "example/bad"  # untagged
    del init["resources"]["limits"]
    main = tpl["spec"]["containers"][0]
    main["image"] = "example/bad:latest"
    del main["livenessProbe"]
    main["readinessProbe"] = {"httpGet": {"path": "/", "port": "http"}}
    main["securityContext"] = {"runAsUser": 0, "capabilities": {"add": ["NET_ADMIN"]}}
    main["env"] = [
        {"name": "DATABASE_URL", "value": "postgres://order:hunter2@db.internal/order"},
        {"name": "ADMIN_TOKEN", "value": "s3cr3t"},
        {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "missing-config", "key": "x"}}},
    ]
    main["envFrom"] = [{"secretRef": {"name": "missing-secret"}}]
    leaky_cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "leaky", "namespace": "t"},
        "data": {"AMQP_URL": "amqp://app:Pa55word@broker:5672/%2f"},
    }
    stray_svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "stray", "namespace": "t"},
        "spec": {"selector": {"app": "nobody"}, "ports": [{"port": 80}]},
    }
    stray_hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "stray", "namespace": "t"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gone"}, "maxReplicas": 2},
    }
    real_secret = dev_secret("real", password="correct horse battery staple")
    expected = {
        "image-tag", "resources", "probes", "probe-port", "non-root", "read-only-root",
        "no-escalation", "drop-all", "seccomp", "pdb", "replicas", "hpa", "service-selector",
        "secret-value", "plain-credential", "config-ref", "secret-ref",
    }  # fmt: skip
    got = codes([bad, leaky_cm, stray_svc, stray_hpa, real_secret], Expect(secrets="dev-only", min_replicas=2, hpa_for=("bad",)))
    if expected - got:
        failures.append(f"rules that did not fire on a manifest breaking them: {sorted(expected - got)}")

    # Secrets at all where none may be committed, even dev-looking ones.
    if "secret-value" not in codes([dev_secret("x", a="dev-only")], Expect(secrets="none")):
        failures.append("a Secret was accepted where Secrets are created out of band")

    # Exemptions are honoured and reported.
    exempted = copy.deepcopy(GOOD_DEPLOYMENT)
    exempted["metadata"]["annotations"] = {EXEMPT_ANNOTATION: "probes"}
    del exempted["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    report = check([exempted, GOOD_PDB, GOOD_SERVICE, good[3]], dev)
    if report.violations or not report.exemptions:
        failures.append(f"exemption: {report.violations} {report.exemptions}")

    for image, ok in [
        ("a/b:1.0", True), ("registry:5000/a/b:1.0", True), ("a/b@sha256:" + "0" * 64, True),
        ("registry:5000/a/b", False), ("a/b", False), ("a/b:latest", False), ("", False),
    ]:  # fmt: skip
        if (image_problem(image) is None) != ok:
            failures.append(f"image_problem({image!r}) = {image_problem(image)!r}")
    return failures
