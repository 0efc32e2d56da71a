"""Container settings from configuration, and the clean-up PipesDockerClient leaves to its caller (real Docker)."""

import subprocess

from distill_assets.config import load_config
from distill_assets.containers import bind_volumes, remove_containers


def test_volumes_from_the_cache_folder_and_the_configured_specs():
    assert bind_volumes(["/cache"], ["/models:/models", "/data:/mnt/data:rw"]) == {
        "/cache": {"bind": "/cache", "mode": "rw"},
        "/models": {"bind": "/models", "mode": "ro"},  # read-only unless the spec says otherwise
        "/data": {"bind": "/mnt/data", "mode": "rw"},
    }


def test_labelled_containers_are_removed_and_no_others(tmp_path):
    image = load_config().sandbox.docker_image
    made = [
        subprocess.run(
            ["docker", "create", "--label", f"distill-test={v}", image, "true"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for v in ("a", "a", "b")
    ]
    try:
        assert remove_containers("distill-test", "a") == 2
        left = subprocess.run(
            ["docker", "ps", "-aq", "--no-trunc", "--filter", "label=distill-test"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert left == [made[2]]
    finally:
        subprocess.run(["docker", "rm", "-f", *made], capture_output=True)
