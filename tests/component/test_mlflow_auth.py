"""MLflow behind its basic-auth app, as manifests/base/mlflow deploys it, with the registry on top.

The server reads the auth settings documented in manifests/base/mlflow/deployment.yaml (the
``basic_auth.ini`` block, with a SQLite user store here). Anonymous clients are refused; the
pipeline's user registers and promotes; a user without EDIT cannot move ``@champion`` (neither by
promotion nor by pin). Needs the auth extra (Flask-WTF, ``mlflow[auth]``); skipped without it.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from deepcritic.registry import (
    OperatorConfig,
    PromoteConfig,
    RegisterConfig,
    pin,
    promote,
    register,
)
from support.checkpoints import make_checkpoint
from support.mlflow_server import Server, running_mlflow_server
from support.mlflow_server import documented_auth_ini as documented_ini

pytest.importorskip("flask_wtf", reason="MLflow's basic-auth app needs mlflow[auth] (Flask-WTF)")

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENT = ROOT / "manifests" / "base" / "mlflow" / "deployment.yaml"
ADMIN_PASSWORD = secrets.token_urlsafe(16)


def documented_auth_ini(database_uri: str) -> str:
    """The basic_auth.ini block from the deployment's comment, with this test's user store."""
    text = documented_ini(DEPLOYMENT)
    return re.sub(r"(?m)^database_uri = .*$", f"database_uri = {database_uri}", text)


@pytest.fixture(scope="module")
def auth_server(
    tmp_path_factory: pytest.TempPathFactory, _mlflow_template_db: Path
) -> Iterator[Server]:
    import shutil

    root = tmp_path_factory.mktemp("mlflow-auth")
    shutil.copy(_mlflow_template_db, root / "mlflow.db")
    ini = root / "basic_auth.ini"
    ini.write_text(documented_auth_ini(f"sqlite:///{root / 'auth.db'}"))
    env = {
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
    }
    with running_mlflow_server(root, ("--app-name", "basic-auth"), env) as server:
        yield server


def _call(
    server: Server, path: str, body: dict | None = None, user: tuple[str, str] | None = None
) -> int:
    req = urllib.request.Request(
        f"{server.uri}{path}", data=json.dumps(body).encode() if body is not None else None,
        method="POST" if body is not None else "GET", headers={"Content-Type": "application/json"},
    )  # fmt: skip
    if user is not None:
        token = base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def _as(monkeypatch: pytest.MonkeyPatch, user: str, password: str) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)


def test_only_authorised_users_move_the_champion(
    auth_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    admin = ("admin", ADMIN_PASSWORD)
    search = "/api/2.0/mlflow/registered-models/search"
    assert _call(auth_server, search) == 401  # anonymous
    assert _call(auth_server, search, user=("admin", "wrong")) == 401
    assert _call(auth_server, search, user=admin) == 200
    users = {"pipeline": secrets.token_urlsafe(12), "viewer": secrets.token_urlsafe(12)}
    for name, password in users.items():
        body = {"username": name, "password": password}
        assert _call(auth_server, "/api/2.0/mlflow/users/create", body, admin) == 200

    monkeypatch.setenv("MLFLOW_TRACKING_URI", auth_server.uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "auth")
    monkeypatch.delenv("DEEPCRITIC_PARENT_RUN_ID", raising=False)
    _as(monkeypatch, "pipeline", users["pipeline"])
    MlflowClient(auth_server.uri).create_experiment("auth")
    versions = []
    for seed, f1 in ((1, 40.0), (2, 60.0)):
        cfg = RegisterConfig(checkpoint=str(make_checkpoint(tmp_path, seed)), model_name="critic",
                             metrics={"avg_f1": f1, "avg_parse_rate": 90.0})  # fmt: skip
        versions.append(register(cfg).version)
    assert promote(PromoteConfig(model_name="critic", version=versions[0])).promoted

    _as(monkeypatch, "viewer", users["viewer"])  # default permission READ: may look, not move
    with pytest.raises(MlflowException, match="PERMISSION_DENIED|403|[Pp]ermission"):
        promote(PromoteConfig(model_name="critic", version=versions[1]))
    with pytest.raises(MlflowException, match="PERMISSION_DENIED|403|[Pp]ermission"):
        pin(OperatorConfig(model_name="critic", version=versions[0]))
    client = MlflowClient(auth_server.uri, auth_server.uri)
    assert str(client.get_model_version_by_alias("critic", "champion").version) == versions[0]

    _as(monkeypatch, "pipeline", users["pipeline"])
    assert promote(PromoteConfig(model_name="critic", version=versions[1])).promoted
