"""Ansible (PyPI ansible-core, .venv/bin/ansible-playbook) runs a playbook over the real
sshd using only the files of the agent's `ssh` output: `ansible_ssh_common_args: -F
DIR/ssh_config`, an inventory in the test's temp dir, no user or system Ansible config
(ANSIBLE_CONFIG points at an empty file, ANSIBLE_HOME at the temp dir). The playbook
writes a file on the host; the test reads it back. The same playbook against a host with
a self-made key fails: Ansible's ssh verifies hosts through the generated known_hosts.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sigil_harness import require_tool
from ssh_harness import Agent, Sshd, UnixUser, agent_config, host_output, private_run_dir, self_made_host, setup_broker

PLAYBOOK = """
- hosts: web
  gather_facts: false
  tasks:
    - name: write a file as the certificate's login
      ansible.builtin.copy:
        content: "deployed by ansible over a sigil certificate\\n"
        dest: "{{ ansible_env_home }}/sigil-ansible.txt"
        mode: "0644"
    - name: who am I
      ansible.builtin.command: id -un
      register: who
    - ansible.builtin.assert:
        that: who.stdout == ansible_user
"""


def ansible_env(tmp: Path) -> dict:
    cfg = tmp / "ansible.cfg"
    cfg.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "SSH_"))}
    env.update({
        "ANSIBLE_CONFIG": str(cfg),
        "ANSIBLE_HOME": str(tmp / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        # No ControlPersist master left running after the test.
        "ANSIBLE_SSH_ARGS": "-o ControlMaster=no",
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "HOME": str(tmp / "home"),
    })
    (tmp / "home").mkdir(exist_ok=True)
    return env


def run_playbook(tmp: Path, login: str, home: Path, port: int, ssh_config: Path) -> subprocess.CompletedProcess:
    playbook = require_tool("ansible-playbook", "pip install ansible-core into .venv")
    inventory = tmp / f"inventory-{port}.ini"
    inventory.write_text(
        "[web]\n"
        f"target ansible_host=127.0.0.1 ansible_port={port} ansible_user={login} ansible_env_home={home} "
        f"ansible_python_interpreter=/usr/bin/python3 ansible_ssh_common_args='-F {ssh_config}'\n")
    book = tmp / "site.yml"
    book.write_text(PLAYBOOK)
    return subprocess.run([playbook, "-i", str(inventory), str(book)], capture_output=True, text=True, timeout=300,
                          env=ansible_env(tmp), stdin=subprocess.DEVNULL)


def test_ansible_runs_a_playbook_with_only_the_generated_files(broker, sigil_bin, tmp_path):
    if not Path("/usr/bin/python3").exists():
        pytest.fail("/usr/bin/python3 not found (Ansible's target interpreter): apt-get install python3")
    base = private_run_dir("sigil-ansible-")
    user = UnixUser("ans")
    started = []
    agent = None
    try:
        tokens = setup_broker(broker, tmp_path, [user.name])
        host_dir = host_output(broker, sigil_bin, tmp_path, tokens["web1"], base)
        sshd = Sshd(include=host_dir / "sshd_config.snippet")
        started.append(sshd)
        out = tmp_path / "ssh"
        cfg = agent_config(broker, tmp_path, "ci", tokens["ci"],
                           f"  - type: ssh\n    dir: {out}\n    principals: [{user.name}]\n    hosts: [127.0.0.1]\n")
        agent = Agent(sigil_bin, cfg)
        agent.wait_file(out / "ssh_config")

        p = run_playbook(tmp_path, user.name, user.home, sshd.port, out / "ssh_config")
        assert p.returncode == 0, p.stdout + p.stderr
        written = user.home / "sigil-ansible.txt"
        assert written.read_text() == "deployed by ansible over a sigil certificate\n"
        assert written.stat().st_uid == int(subprocess.run(["id", "-u", user.name], capture_output=True, text=True).stdout)
        assert "ok=3" in p.stdout and "failed=0" in p.stdout, p.stdout
        sshd.wait_log(f"Accepted publickey for {user.name}")

        # A host Sigil did not certify: Ansible cannot reach it.
        written.unlink()
        key, _ = self_made_host(tmp_path, other_ca=False)
        impostor = Sshd(host_key=key, user_ca=host_dir / "user_ca.pub")
        started.append(impostor)
        p = run_playbook(tmp_path, user.name, user.home, impostor.port, out / "ssh_config")
        assert p.returncode != 0 and "UNREACHABLE" in p.stdout and "Host key verification failed" in p.stdout, p.stdout
        assert not written.exists()
    finally:
        if agent:
            agent.stop()
        for s in started:
            s.stop()
        user.remove()
        shutil.rmtree(base, ignore_errors=True)
