"""The README's production section, run as written (issue: a newcomer following it to
the letter must get the multi-process deployment).

The fenced ``sh`` block of README "Production" is executed from a fresh copy of the
repository (so its ``.env`` never reaches the rest of the suite): steps 1-4 in one
``bash -e`` script (apt-get, the virtualenv, the database role, ``.env``, migrations,
the first admin), every command of step 5 as its own long-running process (both
``celery ... worker`` lines included: two workers on one host), and the example
client of step 6. Then, through nginx on 127.0.0.1:8080: the admin logs in, creates a
task, and the example client prints its live events; both workers are still alive.

It uses the README's fixed names (ports 8001, 8101, 8102, 8080; PostgreSQL role and
database ``tasktracker``, dropped before and after), so it runs under ``CI=true`` or
with ``TT_TEST_README_PRODUCTION=1`` only; elsewhere it skips, since it would drop a
``tasktracker`` database of the machine.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import requests

from tests.procs import ROOT, delete_queue, tail, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

ADMIN_PASSWORD = "readme-admin-password-1"
PORTS = (8001, 8101, 8102, 8080)


def _production_block() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Production"):]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)


def _steps(block: str) -> dict[int, list[str]]:
    """Command lines by step number (``# N. ...`` headers), comments and blanks dropped,
    heredocs kept whole."""
    steps: dict[int, list[str]] = {}
    current, heredoc, end = 0, None, None
    for line in block.splitlines():
        if heredoc is not None:
            heredoc.append(line)
            if line.strip() == end:
                steps[current].append("\n".join(heredoc))
                heredoc = None
            continue
        header = re.match(r"#\s*(\d+)\.", line)
        if header:
            current = int(header.group(1))
            steps[current] = []
            continue
        command = line.split("  #", 1)[0].rstrip() if not line.lstrip().startswith("#") else ""
        if not command:
            continue
        marker = re.search(r"<<'?(\w+)'?", command)
        if marker:
            heredoc, end = [command], marker.group(1)
            continue
        steps[current].append(command)
    return steps


def _psql(sql: str) -> None:
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=0", "-c", sql],
                   capture_output=True, timeout=60)


def _drop_database() -> None:
    _psql("DROP DATABASE IF EXISTS tasktracker WITH (FORCE)")
    _psql("DROP ROLE IF EXISTS tasktracker")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    if os.environ.get("CI") != "true" and os.environ.get("TT_TEST_README_PRODUCTION") != "1":
        pytest.skip("runs the README's production commands with their fixed ports and database "
                    "names (drops a 'tasktracker' database): CI=true or TT_TEST_README_PRODUCTION=1")
    busy = [p for p in PORTS if not _port_free(p)]
    assert not busy, f"the README's ports are taken: {busy}"
    assert shutil.which("psql"), "psql (PostgreSQL client) is needed by the README"
    steps = _steps(_production_block())
    assert sorted(steps) == [1, 2, 3, 4, 5, 6], steps
    work = tmp_path_factory.mktemp("readme-production") / "tasktracker"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if (ROOT / name).is_file():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, work / name)
    logs = work.parent / "logs"
    logs.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(
        ("TASKTRACKER_", "DATABASE_", "CELERY_", "SOCKETIO_", "REDIS_", "FLASK_", "VIRTUAL_ENV", "PYTHON"))}
    env.update({"TT_ADMIN_PASSWORD": ADMIN_PASSWORD, "DEBIAN_FRONTEND": "noninteractive",
                "PATH": ":".join(p for p in env.get("PATH", "").split(":") if ".venv" not in p)})
    _drop_database()
    procs: list[tuple[str, subprocess.Popen, Path]] = []

    def start(name: str, command: str) -> None:
        log = logs / f"{name}.log"
        popen = subprocess.Popen(["bash", "-c", f". .venv/bin/activate && {command}"], cwd=work, env=env,
                                 stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        procs.append((name, popen, log))

    try:
        setup = "set -euo pipefail\n" + "\n".join(steps[1] + steps[2] + steps[3] + steps[4]) + "\n"
        (logs / "setup.sh").write_text(setup)
        done = subprocess.run(["bash", str(logs / "setup.sh")], cwd=work, env=env, capture_output=True,
                              text=True, timeout=420)
        assert done.returncode == 0, f"README steps 1-4 failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        names = iter(["api", "gateway1", "gateway2", "worker1", "worker2", "beat", "nginx"])
        for command in steps[5]:
            start(next(names), command)
        up = wait_for(lambda: requests.get("http://127.0.0.1:8080/health", timeout=2).ok
                      if not _port_free(8080) else False, timeout=60, interval=0.5)
        assert up, "\n".join(f"--- {n}\n{tail(log)}" for n, _, log in procs)
        yield {"work": work, "procs": procs, "steps": steps, "start": start, "logs": logs}
    finally:
        for _name, popen, _log in reversed(procs):
            if popen.poll() is None:
                os.killpg(popen.pid, signal.SIGTERM)
        for _name, popen, _log in reversed(procs):
            try:
                popen.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(popen.pid, signal.SIGKILL)
        _drop_database()
        delete_queue("tasktracker")  # the README's Celery queue (and its exchange)


def test_the_readme_deployment_serves_rest_and_live_events_through_nginx(deployment):
    base = "http://127.0.0.1:8080"
    login = requests.post(f"{base}/api/auth/login", timeout=10,
                          json={"email": "admin@example.com", "password": ADMIN_PASSWORD})
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]
    assert requests.get(f"{base}/api/docs", timeout=10).status_code == 200
    # step 6: the example client, as written (with the admin's real password)
    client_line = deployment["steps"][6][0].replace("'your-password'", shlex.quote(ADMIN_PASSWORD))
    deployment["start"]("socket_client", client_line)
    client_log = deployment["logs"] / "socket_client.log"
    assert wait_for(lambda: "connected" in client_log.read_text(errors="replace").lower(), timeout=30), \
        tail(client_log)
    headers = {"Authorization": f"Bearer {token}"}
    team = requests.post(f"{base}/api/teams", json={"name": "README team"}, headers=headers, timeout=10)
    assert team.status_code == 201, team.text
    task = requests.post(f"{base}/api/tasks", json={"title": "From the README", "team_id": team.json()["id"]},
                         headers=headers, timeout=10)
    assert task.status_code == 201, task.text
    assert wait_for(lambda: "From the README" in client_log.read_text(errors="replace"), timeout=20), \
        tail(client_log)
    # two workers with the README's names on one host: both still running, neither locked out
    for name, popen, log in deployment["procs"]:
        if name.startswith("worker"):
            assert popen.poll() is None, f"{name} died:\n{tail(log)}"
            assert "ResourceLocked" not in log.read_text(errors="replace"), tail(log)
            assert " ready." in log.read_text(errors="replace"), tail(log)
