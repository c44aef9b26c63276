"""A root agent against local users: planted symlinks and directories, FIFOs and
devices in place of files it updates, a socket directory someone else owns,
`/readyz` read by anyone, and outputs handed to a given user (docs/security.md,
"Local attackers: the agent's files, sockets and status").

The agent runs as root (as CI does); every attacker step runs as uid 65534 via
setpriv, or is chowned to it."""
from __future__ import annotations

import os
import resource
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import requests

from agent_harness import Agent, read_jwt, read_key, setup_broker, socket_dir, write_config
from sigil_harness import free_port, stop_process

NOBODY = 65534
SETPRIV = ["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups"]
# A runaway read (e.g. of /dev/zero) must kill the agent, not the CI machine.
AGENT_ADDRESS_SPACE = 4 << 30
RSS_LIMIT_KB = 64 * 1024


def require_root():
    if os.geteuid() != 0:
        pytest.fail("these tests run the agent as root and attackers via setpriv: run them as root (CI does)")
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv is missing: apt-get install util-linux")


def as_user(uid: int, gid: int, *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", "--reuid", str(uid), "--regid", str(gid), "--clear-groups", *cmd],
                          capture_output=True, text=True, timeout=30)


def as_nobody(*cmd: str) -> subprocess.CompletedProcess:
    p = subprocess.run([*SETPRIV, *cmd], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, f"attacker step {cmd} failed: {p.stderr}"
    return p


@pytest.fixture
def scratch():
    """Fresh paths directly in /tmp (sticky, world-writable: where another user can plant things)."""
    made: list[Path] = []

    def new(tag: str) -> Path:
        p = Path(tempfile.gettempdir()) / f"sigil-{tag}-{uuid.uuid4().hex[:10]}"
        made.append(p)
        return p

    yield new
    for p in made:
        if p.is_symlink():
            p.unlink()
        elif p.exists():
            shutil.rmtree(p, ignore_errors=True)


def limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (AGENT_ADDRESS_SPACE, AGENT_ADDRESS_SPACE))


def oneshot(sigil_bin, cfg: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sigil_bin, "agent", "--oneshot", "--config", str(cfg)], capture_output=True, text=True,
                          timeout=120, preexec_fn=limit_memory, env={**os.environ, "SIGIL_LOG": "info"})


class LimitedAgent(Agent):
    """The long-running agent with a bounded address space."""

    def start(self) -> "LimitedAgent":
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen([self.bin, "agent", "--config", str(self.config)], stdout=logf, stderr=logf,
                                     env={**os.environ, "SIGIL_LOG": "info"}, preexec_fn=limit_memory)
        return self

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")


def x509_output(d: Path, extra: str = "") -> str:
    return f"outputs:\n  - type: x509-svid\n    dir: {d}\n    spiffe_id: spiffe://sigil.local/svc/app\n{extra}"


# ------------------------------------------------------------------ 12.7 dirs

def test_output_dir_symlinked_by_another_user_to_a_root_directory_is_refused_and_the_target_untouched(sigil_bin, broker, tmp_path):
    require_root()
    token = setup_broker(broker, tmp_path)
    victim = socket_dir()  # root-owned 0755, as /etc/something
    (victim / "keep").write_text("root's file\n")
    home = socket_dir()
    os.chown(home, NOBODY, NOBODY)  # the attacker's own directory (say /home/app), where the output was configured
    as_nobody("ln", "-s", str(victim), str(home / "svid"))
    cfg = write_config(tmp_path / "agent.yaml", broker, tmp_path / "state", token, x509_output(home / "svid"))
    p = oneshot(sigil_bin, cfg)
    assert p.returncode != 0, "the agent wrote through the planted symlink"
    assert "refusing" in p.stderr, p.stderr
    assert victim.stat().st_mode & 0o777 == 0o755, "the symlink's target was chmodded"
    assert sorted(os.listdir(victim)) == ["keep"], "the symlink's target was filled"


def test_output_dir_precreated_by_another_user_is_refused(sigil_bin, broker, tmp_path, scratch):
    require_root()
    token = setup_broker(broker, tmp_path)
    out = scratch("precreated")
    as_nobody("mkdir", "-m", "0755", str(out))  # before the agent first runs
    cfg = write_config(tmp_path / "agent.yaml", broker, tmp_path / "state", token, x509_output(out))
    p = oneshot(sigil_bin, cfg)
    assert p.returncode != 0, "the agent wrote its key into a directory another user owns"
    assert f"refusing {out}: it is owned by uid {NOBODY}" in p.stderr, p.stderr
    assert not (out / "svid.key").exists() and not (out / "..data").exists()


def test_symlink_planted_by_the_outputs_owner_is_not_followed(sigil_bin, broker, tmp_path):
    """The user an output is written for may own its directory, not redirect root elsewhere."""
    require_root()
    token = setup_broker(broker, tmp_path)
    victim = socket_dir()
    home = socket_dir()
    os.chown(home, NOBODY, NOBODY)
    as_nobody("ln", "-s", str(victim), str(home / "svid"))
    cfg = write_config(tmp_path / "agent.yaml", broker, tmp_path / "state", token,
                       x509_output(home / "svid", f"    owner: \"{NOBODY}\"\n"))
    p = oneshot(sigil_bin, cfg)
    assert p.returncode != 0
    assert "is a symbolic link owned by uid 65534" in p.stderr, p.stderr
    assert os.listdir(victim) == [] and victim.stat().st_uid == 0


# ------------------------------------------------------------------ 12.8 INI read-back

def aws_outputs(cfg_file: Path, tokens: Path, n: int) -> str:
    """n outputs sharing one AWS config file (one profile each), as two apps on one host would."""
    out = "outputs:\n"
    for i in range(n):
        out += (f"  - type: aws-web-identity\n    token_path: {tokens}/t{i}\n    config_file: {cfg_file}\n"
                f"    profile: p{i}\n    role_arn: arn:aws:iam::123456789012:role/r{i}\n"
                f"    spiffe_id: spiffe://sigil.local/svc/aws{i}\n")
    return out


@pytest.mark.parametrize("plant", ["fifo", "dev_zero_symlink"])
def test_fifo_or_dev_zero_in_place_of_aws_config_is_refused_and_the_agent_stays_live(sigil_bin, broker, tmp_path, plant):
    require_root()
    token = setup_broker(broker, tmp_path)
    aws = tmp_path / "home" / ".aws"
    aws.mkdir(parents=True)
    config = aws / "config"
    if plant == "fifo":
        os.mkfifo(config)
        why = "is a FIFO, not a regular file"
    else:
        os.symlink("/dev/zero", config)
        os.lchown(config, NOBODY, NOBODY)
        why = "is a symbolic link"
    hport = free_port()
    # More outputs than async workers: each one that blocks on the file (or on a
    # lock held across it) takes a worker away.
    n = max(8, (os.cpu_count() or 2) + 2)
    cfg = write_config(tmp_path / "agent.yaml", broker, tmp_path / "state", token,
                       "retry: {initial: 200ms, max: 1s}\n" + aws_outputs(config, tmp_path / "tokens", n)
                       + f"health: {{listen: 127.0.0.1:{hport}}}\n")
    a = LimitedAgent(sigil_bin, cfg, tmp_path / "agent.log").start()
    try:
        # Every output has its token by the time it turns to the shared config file.
        a.wait_for(lambda: all((tmp_path / "tokens" / f"t{i}").exists() for i in range(n)), "the token files")
        time.sleep(2)  # let every output try (and retry) the config file
        assert a.proc.poll() is None, f"agent died: {a.log.read_text()[-2000:]}"
        t0 = time.monotonic()
        try:
            r = requests.get(f"http://127.0.0.1:{hport}/livez", timeout=1)
        except requests.exceptions.Timeout:
            pytest.fail("/livez did not answer within 1 s: the async workers are stuck on the file")
        took = time.monotonic() - t0
        assert r.status_code == 200 and took < 1, f"/livez took {took:.2f}s"
        rss = a.rss_kb()
        assert rss < RSS_LIMIT_KB, f"agent RSS {rss} kB"
        print(f"/livez answered in {took * 1000:.0f} ms; agent RSS {rss} kB")
        a.wait_for(lambda: why in a.log.read_text(), f"the output refused ({why})")
        if plant == "fifo":
            assert config.is_fifo()
    finally:
        a.stop()


# ------------------------------------------------------------------ 12.11 socket

def test_workload_socket_dir_owned_by_another_user_is_refused(sigil_bin, broker, tmp_path, scratch):
    require_root()
    token = setup_broker(broker, tmp_path)
    sdir = scratch("sockdir")
    as_nobody("mkdir", "-m", "0755", str(sdir))
    cfg = write_config(tmp_path / "agent.yaml", broker, tmp_path / "state", token,
                       f"services:\n  - type: workload-api\n    socket: {sdir}/agent.sock\n    workload_identities: [root-python]\n")
    a = Agent(sigil_bin, cfg, tmp_path / "agent.log").start()
    try:
        a.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("the agent serves the Workload API from a directory another user owns (they can swap the socket)")
    finally:
        a.stop()
    log = a.log.read_text()
    assert a.proc.returncode != 0
    assert f"refusing {sdir}: it is owned by uid {NOBODY}" in log, log
    assert not (sdir / "agent.sock").exists()


def test_workload_socket_replaces_a_stale_socket_and_leaves_no_temp_name(sigil_bin, broker, tmp_path):
    require_root()
    import socket as pysocket
    token = setup_broker(broker, tmp_path)
    sdir = socket_dir()
    stale = pysocket.socket(pysocket.AF_UNIX)
    stale.bind(str(sdir / "agent.sock"))
    stale.close()
    cfg = write_config(tmp_path / "agent.yaml", broker, tmp_path / "state", token,
                       f"services:\n  - type: workload-api\n    socket: {sdir}/agent.sock\n    workload_identities: [root-python]\n")
    a = Agent(sigil_bin, cfg, tmp_path / "agent.log").start()
    try:
        a.wait_for(lambda: "serving the SPIFFE Workload API" in a.log.read_text(), "socket served")
        c = pysocket.socket(pysocket.AF_UNIX)
        c.connect(str(sdir / "agent.sock"))
        c.close()
        assert (sdir / "agent.sock").stat().st_mode & 0o777 == 0o777
        assert os.listdir(sdir) == ["agent.sock"]
    finally:
        a.stop()


# ------------------------------------------------------------------ 12.12 readyz, owner/group/mode

def refused_output_config(tmp_path, broker, token, hport, details: str = "") -> Path:
    # The role allows /svc/** only: the broker refuses this ID, naming bot and roles.
    body = (f"retry: {{initial: 200ms, max: 1s}}\noutputs:\n  - type: jwt-svid\n    path: {tmp_path}/out/jwt\n"
            f"    audiences: [x]\n    spiffe_id: spiffe://sigil.local/secret/db\n"
            f"health: {{listen: 127.0.0.1:{hport}{details}}}\n")
    return write_config(tmp_path / "agent.yaml", broker, tmp_path / "state", token, body)


def test_readyz_shows_no_bot_roles_or_paths_by_default(sigil_bin, broker, tmp_path):
    token = setup_broker(broker, tmp_path)
    hport = free_port()
    a = Agent(sigil_bin, refused_output_config(tmp_path, broker, token, hport), tmp_path / "agent.log").start()
    try:
        a.wait_for(lambda: "refused" in a.log.read_text() or "denied" in a.log.read_text().lower(), "the broker's refusal")
        r = requests.get(f"http://127.0.0.1:{hport}/readyz", timeout=2)
        assert r.status_code == 503
        for secret in ["node1", "role", "/svc/", "secret/db", str(tmp_path)]:
            assert secret not in r.text, f"/readyz shows {secret!r} to any local user: {r.text}"
        assert r.text.startswith("not ready"), r.text
    finally:
        a.stop()


def test_readyz_shows_reasons_when_details_are_enabled(sigil_bin, broker, tmp_path):
    token = setup_broker(broker, tmp_path)
    hport = free_port()
    cfg = refused_output_config(tmp_path, broker, token, hport, ", details: true")
    a = Agent(sigil_bin, cfg, tmp_path / "agent.log").start()
    try:
        a.wait_for(lambda: "secret/db" in requests.get(f"http://127.0.0.1:{hport}/readyz", timeout=2).text, "reasons on /readyz")
    finally:
        a.stop()


def test_output_with_owner_group_and_mode_is_readable_by_that_user_and_group_only(sigil_bin, broker, tmp_path):
    require_root()
    token = setup_broker(broker, tmp_path)
    base = socket_dir()  # root 0755: every user can traverse
    app_gid = 4242
    body = (
        "outputs:\n"
        f"  - type: x509-svid\n    dir: {base}/svid\n    spiffe_id: spiffe://sigil.local/svc/app\n    owner: \"{NOBODY}\"\n"
        f"  - type: jwt-svid\n    path: {base}/jwt/token\n    audiences: [x]\n    spiffe_id: spiffe://sigil.local/svc/app\n"
        f"    owner: \"{NOBODY}\"\n    group: \"{app_gid}\"\n    mode: \"0640\"\n"
    )
    cfg = write_config(tmp_path / "agent.yaml", broker, tmp_path / "state", token, body)
    p = oneshot(sigil_bin, cfg)
    assert p.returncode == 0, p.stderr
    key, jwt = base / "svid" / "svid.key", base / "jwt" / "token"
    st = key.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (NOBODY, 0o600)
    assert (base / "svid").stat().st_mode & 0o777 == 0o700
    st = jwt.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (NOBODY, app_gid, 0o640)
    # The owner reads both; a member of the group reads the token only; anyone else nothing.
    assert as_user(NOBODY, NOBODY, "cat", str(key)).returncode == 0
    read_key(key)
    assert as_user(NOBODY, NOBODY, "cat", str(jwt)).returncode == 0
    assert as_user(4243, app_gid, "cat", str(jwt)).returncode == 0
    assert as_user(4243, app_gid, "cat", str(key)).returncode != 0
    assert as_user(4243, 4243, "cat", str(jwt)).returncode != 0
    read_jwt(jwt)


def test_join_reads_the_token_from_a_file_so_it_stays_off_the_command_line(sigil_bin, broker, tmp_path):
    secret = setup_broker(broker, tmp_path)
    tok = tmp_path / "join.token"
    tok.write_text(secret + "\n")
    tok.chmod(0o600)
    ident = tmp_path / "bot.identity"
    p = broker.sigil("join", "--token-file", str(tok), "--ca-file", broker.ca, "--out", str(ident))
    assert "joined as bot node1" in p.stderr
    assert ident.stat().st_mode & 0o777 == 0o600
    # The documented commands no longer put a secret on a command line.
    root = Path(__file__).resolve().parents[2]
    for doc in ["README.md", "docs/reference/cli.md", "docs/join-methods/bound-keypair.md"]:
        text = (root / doc).read_text()
        assert "join --token SECRET" not in text and "join --token <" not in text and '--token "$' not in text, doc


def test_a_non_root_cli_may_cross_a_search_only_directory_to_its_own(sigil_bin, broker, tmp_path):
    """Paths are walked with O_PATH: crossing a root 0711 directory needs no read permission."""
    require_root()
    secret = setup_broker(broker, tmp_path)
    top = socket_dir()
    top.chmod(0o711)
    mine = top / "mine"
    mine.mkdir()
    os.chown(mine, NOBODY, NOBODY)
    for name, text in [("ca.pem", Path(broker.ca).read_text()), ("token", secret)]:
        (mine / name).write_text(text)
        os.chown(mine / name, NOBODY, NOBODY)
    p = subprocess.run([*SETPRIV, sigil_bin, "--addr", broker.addr, "join", "--token-file", str(mine / "token"),
                        "--ca-file", str(mine / "ca.pem"), "--out", str(mine / "bot.identity")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    st = (mine / "bot.identity").stat()
    assert (st.st_uid, st.st_mode & 0o777) == (NOBODY, 0o600)
