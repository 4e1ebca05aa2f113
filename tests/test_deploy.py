"""Deploy files: Dockerfile lint, Kubernetes schemas, Procfile/app.yaml, Cloud Functions entry point."""
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import yaml

from app.config import PROJECT_ROOT

GUNICORN = "gunicorn -c gunicorn.conf.py main:app"


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, "Dockerfile"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_is_lean_and_non_root():
    text = (PROJECT_ROOT / "Dockerfile").read_text()
    assert "requirements.txt" in text and "requirements-train" not in text
    assert "USER 10001" in text and "HEALTHCHECK" in text and "/v2/health/ready" in text
    assert '["gunicorn", "-c", "gunicorn.conf.py", "main:app"]' in text


def test_kubernetes_manifests_validate():
    files = sorted((PROJECT_ROOT / "deploy" / "k8s").glob("*.yaml"))
    kinds = set()
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            kubernetes_validate.validate(doc, "1.31", strict=True)
            kinds.add(doc["kind"])
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap", "Secret"} <= kinds
    web = yaml.safe_load((PROJECT_ROOT / "deploy" / "k8s" / "deployment.yaml").read_text())
    containers = {c["name"]: c for c in web["spec"]["template"]["spec"]["containers"]}
    assert containers["web"]["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert containers["web"]["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    # Clients reach gunicorn through the buffering proxy (deploy/nginx), never directly.
    service = yaml.safe_load((PROJECT_ROOT / "deploy" / "k8s" / "service.yaml").read_text())
    assert containers["proxy"]["ports"][0]["name"] == service["spec"]["ports"][0]["targetPort"]


def test_kubernetes_pods_read_models_from_the_shared_store():
    """Web and worker pods both take the store from the ConfigMap and keep their cache in a volume of their own."""
    k8s = PROJECT_ROOT / "deploy" / "k8s"
    settings = yaml.safe_load((k8s / "configmap.yaml").read_text())["data"]
    assert settings["MODELSERVE_MODEL_STORE"].startswith("s3://")
    for name, container in (("deployment.yaml", "web"), ("worker-deployment.yaml", "worker")):
        pod = yaml.safe_load((k8s / name).read_text())["spec"]["template"]["spec"]
        spec = next(c for c in pod["containers"] if c["name"] == container)
        assert {"configMapRef": {"name": "modelserve-config"}} in spec["envFrom"]
        mounts = {m["name"]: m["mountPath"] for m in spec["volumeMounts"]}
        assert mounts["model-cache"] == settings["MODELSERVE_MODEL_CACHE"]
        assert any(v["name"] == "model-cache" and "emptyDir" in v for v in pod["volumes"])


def test_procfile_and_app_yaml_run_the_same_server():
    assert (PROJECT_ROOT / "Procfile").read_text().splitlines() == ["release: flask --app app db upgrade",
                                                                     f"web: {GUNICORN}"]
    app_yaml = yaml.safe_load((PROJECT_ROOT / "app.yaml").read_text())
    assert app_yaml["entrypoint"] == GUNICORN and app_yaml["runtime"] == "python311"


def test_cloud_functions_entry_point_serves_review():
    from functions_framework import create_app

    client = create_app(target="handle", source=str(PROJECT_ROOT / "main.py")).test_client()
    response = client.post("/review", data={"review": "A beautiful, touching film."})
    assert response.status_code == 200
    assert response.get_json()["label"] == "positive"
    assert client.get("/v2/health/ready").status_code == 200
