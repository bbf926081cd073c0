"""The Kubernetes manifests without a cluster: every object (and the GPU
overlay's worker, merged as kustomize merges it) against the Kubernetes
schema, strict; what the objects rely on in each other (selectors, ports,
claims, Secrets, the scheduler's Service in the workers' address); and how
``play_local.render`` maps them to podman."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.podman import play_local
from tests.harness import ROOT

KUBE = ROOT / "deploy" / "kubernetes"
VERSIONS = ("1.28", "1.33")  # gRPC probes are GA from 1.27

OBJECTS: list[dict[str, Any]] = play_local.load()


def by_kind(kind: str, objects: list[dict[str, Any]] = OBJECTS) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def merged_by_name(base: list[dict[str, Any]], patch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Kustomize's strategic merge for lists of named items (containers, env)."""
    out = {item["name"]: copy.deepcopy(item) for item in base}
    for item in patch:
        out[item["name"]] = merged(out.get(item["name"], {}), item)
    return list(out.values())


def merged(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        both = {k: merged(base[k], patch[k]) for k in base.keys() & patch.keys()}
        return {**base, **patch, **both}
    if isinstance(base, list) and isinstance(patch, list) and all("name" in i for i in patch):
        return merged_by_name(base, patch)
    return patch


def gpu_worker() -> dict[str, Any]:
    overlay = yaml.safe_load((KUBE / "overlays/gpu/kustomization.yaml").read_text())
    assert overlay["resources"] == ["../../base"]
    (patch_ref,) = overlay["patches"]
    patch = yaml.safe_load((KUBE / "overlays/gpu" / patch_ref["path"]).read_text())
    return dict(merged(by_kind("Deployment")[patch["metadata"]["name"]], patch))


@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_passes_the_kubernetes_schema_strictly(version: str) -> None:
    for item in [*OBJECTS, gpu_worker()]:
        kubernetes_validate.validate(item, version, strict=True)


def test_the_schema_check_catches_a_misspelt_field() -> None:
    broken = copy.deepcopy(by_kind("Deployment")["wsi-worker"])
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["resource"] = container.pop("resources")
    with pytest.raises(kubernetes_validate.ValidationError, match="resource"):
        kubernetes_validate.validate(broken, VERSIONS[0], strict=True)


def test_the_kustomization_lists_every_file_of_the_base() -> None:
    listed = yaml.safe_load((KUBE / "base/kustomization.yaml").read_text())["resources"]
    on_disk = {p.name for p in (KUBE / "base").glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(listed) == sorted(on_disk)


def test_services_claims_and_secrets_meet_what_uses_them() -> None:
    deployments, services = by_kind("Deployment"), by_kind("Service")
    claims = by_kind("PersistentVolumeClaim")
    for name, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
        pod = deployment["spec"]["template"]["spec"]
        for volume in pod["volumes"]:
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, volume
        mounts = {m["name"] for c in pod["containers"] for m in c["volumeMounts"]}
        assert mounts == {v["name"] for v in pod["volumes"]}, name
    for name, service in services.items():
        (target,) = [
            d
            for d in deployments.values()
            if service["spec"]["selector"].items()
            <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        ports = {
            p["name"] for c in target["spec"]["template"]["spec"]["containers"] for p in c["ports"]
        }
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports, name
    # The workers and the gateway reach the scheduler by its Service's name and port.
    scheduler_port = services["wsi-scheduler"]["spec"]["ports"][0]["port"]
    for name in ("wsi-worker", "wsi-gateway"):
        env = {
            e["name"]: e.get("value")
            for e in deployments[name]["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        address = env.get("WSI_SCHEDULER") or env.get("WSI_SCHEDULER_ADDRESS")
        assert address == f"wsi-scheduler:{scheduler_port}", name


def test_every_pod_is_non_root_read_only_limited_and_scraped() -> None:
    for name, deployment in {**by_kind("Deployment"), "gpu": gpu_worker()}.items():
        template = deployment["spec"]["template"]
        assert template["metadata"]["annotations"]["prometheus.io/scrape"] == "true", name
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == play_local.IMAGE_UID
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert {"cpu", "memory"} <= container["resources"]["requests"].keys(), name
            assert "memory" in container["resources"]["limits"], name
            assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}, name
    gpu = gpu_worker()["spec"]["template"]["spec"]["containers"][0]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"name": "WSI_MODEL_DEVICE", "value": "cuda"} in gpu["env"]


def test_render_maps_services_secrets_replicas_ports_and_slides() -> None:
    slides = Path("/srv/slides")
    played = play_local.render(OBJECTS, slides, image="wsi:test", gateway_port=18000, workers=3)
    names = [d["metadata"]["name"] for d in played]
    assert names == ["wsi-scheduler", "wsi-worker", "wsi-worker-2", "wsi-worker-3", "wsi-gateway"]
    for deployment in played:
        pod = deployment["spec"]["template"]["spec"]
        assert deployment["spec"]["replicas"] == 1
        assert all(c["image"] == "wsi:test" for c in pod["containers"])
        for volume in pod["volumes"]:
            assert "secret" not in volume
            if volume["name"] == "slides":
                assert volume["hostPath"]["path"] == str(slides)
        env = {e["name"]: e["value"] for c in pod["containers"] for e in c["env"]}
        for key in ("WSI_SCHEDULER", "WSI_SCHEDULER_ADDRESS"):
            if key in env:
                assert env[key] == "wsi-scheduler-pod-0:50051"
        ports = [p for c in pod["containers"] for p in c["ports"]]
        if deployment["metadata"]["name"] == "wsi-gateway":
            assert ports == [{"containerPort": 8000, "hostIP": "127.0.0.1", "hostPort": 18000}]
        else:
            assert ports == []
    assert play_local.load() == OBJECTS  # the objects themselves are left alone
