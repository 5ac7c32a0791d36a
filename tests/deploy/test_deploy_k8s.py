"""deploy/k8s: every object is valid against the Kubernetes schema, the objects reference each other
correctly, probes hit paths the app serves, and the ConfigMap is a valid server configuration."""

from __future__ import annotations

import pytest
import yaml

pytestmark = pytest.mark.unit

K8S_VERSION = "1.29.0"  # the oldest release the manifests target (unhealthyPodEvictionPolicy is GA there)


@pytest.fixture(scope="module")
def objects(deploy) -> dict[str, dict]:
    """kind -> object (one of each kind except PersistentVolumeClaims, keyed by name)."""
    kustomization = yaml.safe_load((deploy.DEPLOY / "k8s" / "kustomization.yaml").read_text())
    out: dict[str, dict] = {}
    for resource in kustomization["resources"]:
        for obj in deploy.load_yaml_docs(deploy.DEPLOY / "k8s" / resource):
            key = f"pvc/{obj['metadata']['name']}" if obj["kind"] == "PersistentVolumeClaim" else obj["kind"]
            assert key not in out, f"two {key}"
            out[key] = obj
    return out


def _container(objects: dict) -> dict:
    containers = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def test_kustomization_lists_every_manifest(deploy):
    k8s = deploy.DEPLOY / "k8s"
    kustomization = yaml.safe_load((k8s / "kustomization.yaml").read_text())
    on_disk = {p.name for p in k8s.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == on_disk
    assert kustomization["images"][0]["name"] == _image_name(deploy)


def _image_name(deploy) -> str:
    deployment = deploy.load_yaml_docs(deploy.DEPLOY / "k8s" / "deployment.yaml")[0]
    return deployment["spec"]["template"]["spec"]["containers"][0]["image"].split(":")[0]


def test_objects_are_valid_kubernetes(objects, deploy):
    kubernetes_validate = pytest.importorskip("kubernetes_validate",
                                              reason="pip install kubernetes-validate (in the dev extra)")
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap", "PodDisruptionBudget"} <= set(objects)
    tools_pod = deploy.load_yaml_docs(deploy.DEPLOY / "k8s" / "extras" / "volumes-pod.yaml")[0]
    for obj in [*objects.values(), tools_pod]:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)  # raises on any unknown or wrong field
    monitor = deploy.load_yaml_docs(deploy.DEPLOY / "k8s" / "extras" / "servicemonitor.yaml")[0]
    assert monitor["kind"] == "ServiceMonitor"  # a CRD: no upstream schema, checked by the test below


def test_objects_reference_each_other(objects, deploy):
    deployment, service = objects["Deployment"], objects["Service"]
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    for selector in (deployment["spec"]["selector"]["matchLabels"], service["spec"]["selector"],
                     objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]):
        assert selector and selector.items() <= labels.items()
    container = _container(objects)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"] and ports == {"http": 8000}
    assert container["envFrom"][0]["configMapRef"]["name"] == objects["ConfigMap"]["metadata"]["name"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert {m["name"] for m in container["volumeMounts"]} == set(volumes)
    claims = {v["persistentVolumeClaim"]["claimName"] for v in volumes.values() if "persistentVolumeClaim" in v}
    assert claims == {k.split("/", 1)[1] for k in objects if k.startswith("pvc/")}
    target = objects["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    tools_pod = deploy.load_yaml_docs(deploy.DEPLOY / "k8s" / "extras" / "volumes-pod.yaml")[0]["spec"]
    assert {v["persistentVolumeClaim"]["claimName"] for v in tools_pod["volumes"]} == claims
    assert tools_pod["containers"][0]["image"] == container["image"]
    for key in ("runAsUser", "runAsGroup", "fsGroup"):  # files it writes are the server's to read
        assert tools_pod["securityContext"][key] == pod["spec"]["securityContext"][key]
    monitor = deploy.load_yaml_docs(deploy.DEPLOY / "k8s" / "extras" / "servicemonitor.yaml")[0]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}


def test_pod_runs_the_image_non_root_on_a_gpu_with_shared_adapters(objects):
    spec = objects["Deployment"]["spec"]["template"]["spec"]
    container = _container(objects)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001  # the Dockerfile's UID
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1  # one process per GPU
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/data/adapters"]["readOnly"] is True  # every replica reads the same adapter files
    adapters = next(v for v in spec["volumes"] if v["name"] == mounts["/data/adapters"]["name"])
    claim = objects[f"pvc/{adapters['persistentVolumeClaim']['claimName']}"]
    assert "ReadWriteMany" in claim["spec"]["accessModes"] or "ReadOnlyMany" in claim["spec"]["accessModes"]
    assert objects["Deployment"]["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_probes_hit_paths_the_service_serves(objects, deploy):
    container = _container(objects)
    probes = {name: container[name]["httpGet"] for name in ("readinessProbe", "livenessProbe", "startupProbe")}
    assert probes["readinessProbe"]["path"] == "/health/ready"
    assert probes["livenessProbe"]["path"] == "/health/live"
    assert {p["port"] for p in probes.values()} == {"http"}
    statuses = deploy.get_statuses(sorted({p["path"] for p in probes.values()}))
    # before the models load: alive, not ready (so no traffic yet)
    assert statuses == {"/health/live": 200, "/health/ready": 503}
    annotations = objects["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert deploy.get_statuses([annotations["prometheus.io/path"]]) == {"/metrics": 200}


def test_configmap_is_a_valid_server_configuration(objects, deploy, monkeypatch, tmp_path):
    data = objects["ConfigMap"]["data"]
    assert all(k.startswith(("RADAPT_", "HF_")) for k in data)
    from service.settings import Settings

    unknown = {k for k in data if k.startswith("RADAPT_")} - {f"RADAPT_{f.upper()}" for f in Settings.model_fields}
    assert not unknown, f"ConfigMap keys no setting reads: {unknown}"
    settings = deploy.settings_from_env(data, monkeypatch, tmp_path)
    assert settings.device == "cuda" and settings.max_batch_size == int(data["RADAPT_MAX_BATCH_SIZE"])
    assert data["HF_HUB_OFFLINE"] == "1"
    mounts = {m["mountPath"] for m in _container(objects)["volumeMounts"]}
    assert data["RADAPT_ADAPTER_DIR"] in mounts


def test_hpa_scales_on_a_metric_the_service_exports(objects, deploy):
    hpa = objects["HorizontalPodAutoscaler"]["spec"]
    assert 1 <= hpa["minReplicas"] < hpa["maxReplicas"]
    metric = hpa["metrics"][0]["pods"]["metric"]["name"]
    assert metric in deploy.metric_sample_names()
    values = yaml.safe_load((deploy.DEPLOY / "k8s" / "extras" / "prometheus-adapter-values.yaml").read_text())
    rule = values["rules"]["custom"][0]
    assert rule["name"]["as"] == metric and metric in rule["seriesQuery"]
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60  # GPU replicas start slowly


def test_termination_grace_covers_the_servers_drain(objects, deploy, monkeypatch, tmp_path):
    """Kubernetes kills the pod at terminationGracePeriodSeconds: the drain (shutdown_grace_s) and
    uvicorn's own limit after it (+5 s) must end before, or in-flight requests die with the pod."""
    settings = deploy.settings_from_env(objects["ConfigMap"]["data"], monkeypatch, tmp_path)
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    command = _container(objects)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"  # the Service stops routing here before SIGTERM
    assert settings.shutdown_grace_s >= settings.request_timeout_s  # a request admitted at SIGTERM can finish
    assert pod["terminationGracePeriodSeconds"] >= float(command[1]) + settings.shutdown_grace_s + 5
