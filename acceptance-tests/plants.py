"""Something planted at a secret path before Sigil writes or reads it: a symlink to
another file (the victim), or a file left readable by everyone. Shared by the broker,
agent and cloud tests of docs/security.md, "Hardening pass (issue 13)"."""
import os
import stat
from pathlib import Path

VICTIM_TEXT = "another file's content\n"
LOOSE_TEXT = "left readable by everyone\n"
PLANTS = ["symlink", "loose_file"]


def mode(p):
    return stat.S_IMODE(os.lstat(p).st_mode)


def victim_file(tmp_path, name="victim", text=VICTIM_TEXT):
    v = Path(tmp_path) / name
    v.write_text(text)
    v.chmod(0o644)
    return v


def plant(path, how, victim, loose_text=LOOSE_TEXT):
    """Plants a symlink to `victim` (how == "symlink") or a 0644 file at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if how == "symlink":
        path.symlink_to(victim)
    else:
        path.write_text(loose_text)
        path.chmod(0o644)


def assert_victim_untouched(victim, text=VICTIM_TEXT):
    assert Path(victim).read_text() == text, "the symlink's target was written"
    assert mode(victim) == 0o644, "the symlink's target was chmodded"


def assert_private_regular_file(path):
    st = os.lstat(path)
    assert stat.S_ISREG(st.st_mode), f"{path} is not a regular file (a planted link was followed or kept)"
    assert stat.S_IMODE(st.st_mode) == 0o600, (str(path), oct(st.st_mode))


def assert_read_back_verdict(p, path, how, link_message):
    """A file Sigil reads back and keeps using (a bound key, a join sequence, an AWS file it merges
    into): a planted symlink is refused naming the path and left as it is (`link_message` says what
    reading through it would have meant); a loose file is used and comes out a regular 0600 file."""
    if how == "symlink":
        assert p.returncode != 0, link_message
        assert f"refusing {path}: it is a symbolic link" in p.stderr, p.stderr
        assert os.path.islink(path)
    else:
        assert p.returncode == 0, p.stderr
        assert_private_regular_file(path)
