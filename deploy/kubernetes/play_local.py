"""Plays the Kubernetes manifests of ``deploy/kubernetes/base`` on one host
with ``podman kube play``: to try them before a cluster, and for their test.

    python deploy/kubernetes/play_local.py up --secrets DIR --slides DIR [--gateway-port 8000]
    python deploy/kubernetes/play_local.py up --slides DIR --workers 3   # a third worker pod
    python deploy/kubernetes/play_local.py down [--volumes]

``up`` plays every Deployment whose pod is not there yet, so running it again
after a pod was removed plays that pod again (on the same volumes), and
``--workers N`` adds worker pods. What a cluster has and podman has not is
mapped, nowhere else than in :func:`render`:

- Services: pods on one podman network reach each other by pod name, so a
  Service's name in an address becomes its Deployment's pod name.
- Secrets (``kubectl create secret``): their files go into the named volume
  ``wsi-secrets`` (owned by the image's user, mode 0440), mounted where the
  Secret would be.
- Replicas: ``kube play`` makes one pod per Deployment, so each worker
  replica is a Deployment of its own.
- Container ports: ``kube play`` publishes them on every address of the
  host, so they are dropped (pods reach each other on the network), and
  only the gateway's is published, on 127.0.0.1, with ``--gateway-port``.
- The slides claim: the host folder ``--slides``, read-only. The other
  claims become named volumes of the same name, kept by ``down``.
"""

from __future__ import annotations

import argparse
import copy
import io
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import yaml

BASE = Path(__file__).resolve().parent / "base"
NETWORK = "wsi"
SECRETS_VOLUME = "wsi-secrets"
SLIDES_CLAIM = "wsi-slides"
VOLUMES = ("wsi-results", "wsi-scheduler-state", SECRETS_VOLUME)  # what down --volumes removes
IMAGE_UID = 10001
Manifest = dict[str, Any]


def load(base: Path = BASE) -> list[Manifest]:
    """The objects of the kustomization, in its order."""
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
    objects: list[Manifest] = []
    for resource in kustomization["resources"]:
        objects += [o for o in yaml.safe_load_all((base / resource).read_text()) if o]
    return objects


def pod_name(deployment: str) -> str:
    """The pod ``kube play`` makes of a Deployment (one per Deployment)."""
    return f"{deployment}-pod-0"


def replica_name(deployment: str, replica: int) -> str:
    """Replica 1 keeps the Deployment's name; the others are numbered from 2."""
    return deployment if replica == 1 else f"{deployment}-{replica}"


def render(
    objects: list[Manifest],
    slides: Path,
    image: str | None = None,
    gateway_port: int | None = None,
    workers: int | None = None,
) -> list[Manifest]:
    """The Deployments to play, one per pod, with a cluster's objects mapped
    to podman's (see the module's docstring). Pure: no podman, no files."""
    services = {o["metadata"]["name"] for o in objects if o["kind"] == "Service"}
    played: list[Manifest] = []
    for deployment in (o for o in objects if o["kind"] == "Deployment"):
        name = deployment["metadata"]["name"]
        replicas = workers if workers and name == "wsi-worker" else deployment["spec"]["replicas"]
        published = gateway_port if name == "wsi-gateway" else None
        for replica in range(1, replicas + 1):
            one = copy.deepcopy(deployment)
            one["metadata"]["name"] = replica_name(name, replica)
            one["spec"]["replicas"] = 1
            pod = one["spec"]["template"]["spec"]
            for container in pod["containers"]:
                _map_container(container, services, image, published)
            pod["volumes"] = [_map_volume(v, slides) for v in pod["volumes"]]
            played.append(one)
    return played


def _map_container(
    container: Manifest, services: set[str], image: str | None, published: int | None
) -> None:
    if image:
        container["image"] = image
    # kube play would publish every port on every host address: only the
    # gateway's first port, on loopback, when asked.
    ports = container.get("ports", [])[:1] if published else []
    container["ports"] = [
        {"containerPort": p["containerPort"], "hostIP": "127.0.0.1", "hostPort": published}
        for p in ports
    ]
    for variable in container.get("env", []):
        host, sep, port = str(variable.get("value", "")).partition(":")
        if sep and host in services:
            variable["value"] = f"{pod_name(host)}:{port}"


def _map_volume(volume: Manifest, slides: Path) -> Manifest:
    if "secret" in volume:
        claim = {"claimName": SECRETS_VOLUME, "readOnly": True}
        return {"name": volume["name"], "persistentVolumeClaim": claim}
    claim = volume.get("persistentVolumeClaim", {})
    if claim.get("claimName") == SLIDES_CLAIM:
        return {"name": volume["name"], "hostPath": {"path": str(slides), "type": "Directory"}}
    return volume


def secrets_archive(folder: Path) -> bytes:
    """The files of ``folder`` as a tar owned by the image's user, mode 0440."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path in sorted(p for p in folder.iterdir() if p.is_file()):
            data = path.read_bytes()
            member = tarfile.TarInfo(path.name)
            member.size, member.mode = len(data), 0o440
            member.uid = member.gid = IMAGE_UID
            archive.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def podman(*args: str, stdin: bytes | None = None, check: bool = True) -> str:
    done = subprocess.run(["podman", *args], input=stdin, capture_output=True)
    if check and done.returncode != 0:
        sys.exit(f"podman {' '.join(args[:3])}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout.decode()


def _present(kind: str, name: str) -> bool:
    return subprocess.run(["podman", kind, "exists", name], capture_output=True).returncode == 0


def up(args: argparse.Namespace) -> None:
    if not _present("network", NETWORK):
        podman("network", "create", NETWORK)
    if args.secrets:
        if not _present("volume", SECRETS_VOLUME):
            podman("volume", "create", SECRETS_VOLUME)
        podman("volume", "import", SECRETS_VOLUME, "-", stdin=secrets_archive(args.secrets))
    elif not _present("volume", SECRETS_VOLUME):
        sys.exit("no secrets yet: give --secrets DIR (worker-secret and tokens.txt)")
    slides = args.slides.resolve()
    for deployment in render(load(), slides, args.image, args.gateway_port, args.workers):
        pod = pod_name(deployment["metadata"]["name"])
        if not _present("pod", pod):
            _play(deployment)
            print(f"played {pod}")


def _play(deployment: Manifest) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as file:
        yaml.safe_dump(deployment, file)
        file.flush()
        podman("kube", "play", "--network", NETWORK, file.name)


def down(args: argparse.Namespace) -> None:
    listed = podman("pod", "ps", "--format", "{{.Name}}").split()
    names = [n for n in listed if n.startswith("wsi-") and n.endswith("-pod-0")]
    # Workers and gateways first, all at once (each within its grace), then
    # the scheduler: a worker leaving a scheduler that is gone waits for it.
    scheduler = [n for n in names if n == pod_name("wsi-scheduler")]
    for group in ([n for n in names if n not in scheduler], scheduler):
        if group:  # stopped, then removed: `pod rm --force` takes ~4 s more a pod
            podman("pod", "stop", "--time", "10", *group)
            podman("pod", "rm", *group)
            print("removed " + " ".join(group))
    if args.volumes:  # all gone: the volumes, and the network `up` made
        for volume in VOLUMES:
            podman("volume", "rm", "--force", volume, check=False)
        podman("network", "rm", NETWORK, check=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="play_local.py", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="play what is not running yet")
    start.add_argument("--secrets", type=Path, help="folder with worker-secret and tokens.txt")
    start.add_argument(
        "--slides", type=Path, required=True, help="host folder of slides (read-only)"
    )
    start.add_argument("--image", help="image of every service (default: the manifests')")
    start.add_argument("--gateway-port", type=int, help="publish the gateway on 127.0.0.1:PORT")
    start.add_argument("--workers", type=int, help="worker pods (default: the replicas)")
    stop = commands.add_parser("down", help="remove the pods")
    stop.add_argument("--volumes", action="store_true", help="and the results, journal, secrets")
    args = parser.parse_args(argv)
    if args.command == "up":
        up(args)
    else:
        down(args)


if __name__ == "__main__":
    main()
