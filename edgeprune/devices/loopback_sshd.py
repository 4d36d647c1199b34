"""An OpenSSH server on 127.0.0.1 for a board that lives on this machine (the emulated board, the tests' board).

A real sshd, so `deploy` and `board bootstrap` reach such a board exactly as they reach a Raspberry Pi: host key
checked, key-only login, SFTP upload. It runs as the current user with its own host key and one authorized
client key, both generated into the board's folder; `StrictModes no` because that folder may be world-writable
(a temp dir) and `UsePAM no` because PAM needs root's configuration.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")
HOST = "127.0.0.1"


def _in_folder(name: str, doc: str | None = None) -> property:
    """A read-only `Path` attribute: the file `name` in the sshd's folder."""
    return property(lambda files: files.folder / name, doc=doc)


@dataclass(frozen=True)
class SSHDFiles:
    """The files of one loopback sshd, all in `folder`."""

    folder: Path

    host_key = _in_folder("host_ed25519")
    client_key = _in_folder("client_ed25519", "The only key the server accepts (a profile's `ssh.key_file`).")
    authorized_keys = _in_folder("authorized_keys")
    known_hosts = _in_folder("known_hosts")
    config = _in_folder("sshd_config")
    pid = _in_folder("sshd.pid")
    log = _in_folder("sshd.log")

    def fingerprint(self) -> str:
        """The host key's fingerprint as `ssh-keygen -lf` prints it."""
        listed = subprocess.run(
            ["ssh-keygen", "-lf", str(self.host_key.with_suffix(".pub"))], check=True, capture_output=True, text=True
        )
        return listed.stdout.split()[1]


def sshd_problem() -> str | None:
    """Why a loopback sshd cannot run here, or None when it can."""
    if not SSHD.exists() or shutil.which("ssh-keygen") is None:
        return "OpenSSH server not installed (apt-get install openssh-server)"
    privsep = Path("/run/sshd")  # sshd refuses to start without its privilege separation directory
    if not privsep.exists():
        try:
            privsep.mkdir(mode=0o755, parents=True)
        except OSError as exc:
            return f"sshd needs {privsep}, which cannot be created here: {exc}"
    return None


def _keygen(path: Path) -> None:
    if not path.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgeprune-loopback", "-f", str(path)], check=True
        )


def prepare(folder: Path) -> SSHDFiles:
    """Generate the host and client keys once (kept across restarts, so known_hosts stays valid)."""
    files = SSHDFiles(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _keygen(files.host_key)
    _keygen(files.client_key)
    shutil.copy(files.client_key.with_suffix(".pub"), files.authorized_keys)
    return files


def trust(files: SSHDFiles, port: int) -> None:
    """Record the server's host key in its known_hosts: we generated it, so nothing is trusted on first use."""
    kind, blob = files.host_key.with_suffix(".pub").read_text().split()[:2]
    files.known_hosts.write_text(f"[{HOST}]:{port} {kind} {blob}\n")


def write_config(files: SSHDFiles, port: int, user: str | None = None, env: dict[str, str] | None = None) -> Path:
    """`env`: variables every session gets (sshd's SetEnv), as a board's login environment would set them."""
    set_env = "".join(f'SetEnv {name}="{value}"\n' for name, value in (env or {}).items())
    files.config.write_text(
        f"""Port {port}
ListenAddress {HOST}
HostKey {files.host_key}
PidFile {files.pid}
AuthorizedKeysFile {files.authorized_keys}
AllowUsers {user or getpass.getuser()}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
Subsystem sftp internal-sftp
"""
        + set_env
    )
    return files.config


def answers(port: int, timeout: float = 1.0) -> bool:
    """True when an SSH server sends its banner on 127.0.0.1:`port`."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            return sock.recv(64).startswith(b"SSH-2.0-")
    except OSError:
        return False


def start(
    files: SSHDFiles,
    port: int,
    timeout: float = 15.0,
    detached: bool = False,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start `sshd -D` on 127.0.0.1:`port`; returns once it sends its banner, else raises OSError with its log.

    `detached` gives it a session of its own, so it outlives the command that started it; `env` is set in every
    session it serves."""
    write_config(files, port, env=env)
    with open(files.log, "ab") as out:
        proc = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(files.config)],
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            start_new_session=detached,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if answers(port):
            trust(files, port)
            return proc
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    raise OSError(f"sshd did not start on {HOST}:{port}; its log:\n{files.log.read_text()[-2000:]}")
