"""SSH to a board with paramiko: verified host keys, key or agent auth, commands with timeouts, SFTP helpers.

Host keys are checked against the profile's known_hosts file. An unknown host is refused with its SHA256
fingerprint (what `ssh-keygen -lf` prints on the board) unless the caller trusts it explicitly; a changed key
is always refused. paramiko's AutoAddPolicy is never used: silently trusting the first key defeats the check.
"""

from __future__ import annotations

import contextlib
import posixpath
import shlex
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgeprune import atomic
from edgeprune.errors import EdgepruneError

if TYPE_CHECKING:
    import paramiko

    from edgeprune.devices.base import Device, SSHConfig

CONNECT_TIMEOUT_S = 15.0
COMMAND_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class CommandResult:
    command: str
    exit_code: int
    stdout: str
    stderr: str


def known_hosts_name(ssh: SSHConfig) -> str:
    """How OpenSSH names the host in known_hosts: `host`, or `[host]:port` off port 22."""
    return ssh.host if ssh.port == 22 else f"[{ssh.host}]:{ssh.port}"


def _host_key_policy(ssh: SSHConfig, trust_new_host: bool) -> paramiko.MissingHostKeyPolicy:
    import paramiko

    class RefuseOrRecord(paramiko.MissingHostKeyPolicy):
        """Unknown key: refuse with the fingerprint, or (trusted explicitly) append it to known_hosts."""

        def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
            if not trust_new_host:
                raise EdgepruneError(
                    f"unknown SSH host key for {hostname}: {key.get_name()} {key.fingerprint} "
                    f"(not in {ssh.known_hosts_path})",
                    hint="compare it with `ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub` run on the board, then "
                    "rerun with --trust-new-host to record it",
                )
            record_host_key(ssh.known_hosts_path, hostname, key)
            client.get_host_keys().add(hostname, key.get_name(), key)

    return RefuseOrRecord()


def record_host_key(path: Path, hostname: str, key: paramiko.PKey) -> None:
    """Append one `host type base64` line to known_hosts; the file is rewritten atomically."""
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    if existing and not existing.endswith("\n"):
        existing += "\n"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic.write_text(path, f"{existing}{hostname} {key.get_name()} {key.get_base64()}\n")


class BoardConnection:
    """One SSH connection to a board: run commands, and move files over SFTP."""

    def __init__(self, client: paramiko.SSHClient, ssh: SSHConfig) -> None:
        self.client = client
        self.ssh = ssh
        self.sftp = client.open_sftp()
        self.home = self.sftp.normalize(".")

    @property
    def label(self) -> str:
        return f"{self.ssh.user}@{self.ssh.host}:{self.ssh.port}"

    def close(self) -> None:
        self.sftp.close()
        self.client.close()

    def resolve(self, path: str) -> str:
        """An absolute board path: `~` and relative paths are taken from the login user's home."""
        if path == "~" or path.startswith("~/"):
            path = path[2:]
        return posixpath.normpath(posixpath.join(self.home, path))

    def run(self, command: str, timeout: float = COMMAND_TIMEOUT_S) -> CommandResult:
        """Run a shell command; stdout and stderr are drained together, so neither can fill up and stall."""
        channel = self.client.get_transport().open_session()  # type: ignore[union-attr]
        channel.exec_command(command)
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        while True:
            busy = False
            if channel.recv_ready():
                out += channel.recv(1 << 16)
                busy = True
            if channel.recv_stderr_ready():
                err += channel.recv_stderr(1 << 16)
                busy = True
            if not busy and channel.exit_status_ready() and channel.eof_received:
                break
            if time.monotonic() > deadline:
                channel.close()
                raise EdgepruneError(f"command on {self.label} did not finish in {timeout:.0f}s: {command}")
            if not busy:
                time.sleep(0.01)
        code = channel.recv_exit_status()
        channel.close()
        return CommandResult(command, code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))

    def check(self, command: str, timeout: float = COMMAND_TIMEOUT_S) -> CommandResult:
        result = self.run(command, timeout)
        if result.exit_code != 0:
            tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
            raise EdgepruneError(f"command on {self.label} failed (exit {result.exit_code}): {command}\n{tail}")
        return result

    def exists(self, path: str) -> bool:
        try:
            self.sftp.stat(path)
        except FileNotFoundError:
            return False
        return True

    def makedirs(self, path: str) -> None:
        """`mkdir -p` over SFTP (no shell needed)."""
        if self.exists(path):
            return
        self.makedirs(posixpath.dirname(path))
        self.sftp.mkdir(path)

    def put(self, local: Path, remote: str, progress: Callable[[int, int], None] | None = None) -> None:
        self.sftp.put(str(local), remote, callback=progress, confirm=True)

    def rename(self, source: str, target: str) -> None:
        """rename(2) on the board: atomic within one filesystem."""
        self.sftp.posix_rename(source, target)

    def remove_tree(self, path: str) -> None:
        self.check(f"rm -rf -- {shlex.quote(path)}", timeout=120)


def require_ssh(device: Device) -> SSHConfig:
    """The device's SSH settings; a device without them (like `local`) is not a board."""
    if device.ssh is None:
        where = f" ({device.source})" if device.source else ""
        raise EdgepruneError(
            f"device '{device.name}' has no ssh settings{where}: it is not a board edgeprune can reach",
            hint="add an ssh table (host, user, key_file, known_hosts) to its profile; the `local` device needs no "
            "deploy (its RPC servers come from `edgeprune farm up`)",
        )
    return device.ssh


def connect(device: Device, trust_new_host: bool = False, timeout: float = CONNECT_TIMEOUT_S) -> BoardConnection:
    """Connect to the board of `device` with its profile's SSH settings; errors say what to fix."""
    import paramiko

    ssh = require_ssh(device)
    key_path = ssh.key_path
    if key_path is not None and not key_path.exists():
        raise EdgepruneError(
            f"SSH key file {key_path} of device '{device.name}' does not exist",
            hint="fix ssh.key_file in the profile, or remove it to use your ssh-agent",
        )
    client = paramiko.SSHClient()
    if ssh.known_hosts_path.exists():
        try:
            client.load_host_keys(str(ssh.known_hosts_path))
        except (OSError, paramiko.SSHException) as exc:
            raise EdgepruneError(f"cannot read known_hosts file {ssh.known_hosts_path}: {exc}") from exc
    client.set_missing_host_key_policy(_host_key_policy(ssh, trust_new_host))
    target = f"{ssh.user}@{ssh.host}:{ssh.port}"
    try:
        client.connect(
            ssh.host,
            port=ssh.port,
            username=ssh.user,
            key_filename=str(key_path) if key_path else None,
            allow_agent=True,
            look_for_keys=key_path is None,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
        )
        return BoardConnection(client, ssh)
    except EdgepruneError:
        client.close()
        raise
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise EdgepruneError(
            f"SSH host key of {known_hosts_name(ssh)} CHANGED: it offers {exc.key.get_name()} "
            f"{exc.key.fingerprint}, known_hosts ({ssh.known_hosts_path}) has {exc.expected_key.fingerprint}",
            hint="someone may be intercepting the connection; if the board was reinstalled, remove its old line "
            f"with `ssh-keygen -R '{known_hosts_name(ssh)}' -f {ssh.known_hosts_path}`",
        ) from exc
    except paramiko.AuthenticationException as exc:
        client.close()
        raise EdgepruneError(
            f"SSH authentication to {target} failed: {exc}",
            hint="key authentication only: check ssh.key_file and that its public key is in the board's "
            "authorized_keys, or load the key into ssh-agent (a passphrase-protected key needs the agent)",
        ) from exc
    except paramiko.SSHException as exc:
        client.close()
        if "No authentication methods" in str(exc):  # paramiko's words when it had no key at all to offer
            raise EdgepruneError(
                f"no SSH key to offer to {target}: the profile sets no ssh.key_file and ssh-agent holds no key",
                hint="set ssh.key_file in the profile, or `ssh-add` your key (SSH_AUTH_SOCK must be set)",
            ) from exc
        raise EdgepruneError(f"SSH to {target} failed: {exc}") from exc
    except (TimeoutError, OSError) as exc:
        client.close()
        raise EdgepruneError(
            f"cannot reach {target} over SSH: {exc}",
            hint="is the board on and sshd running? check ssh.host and ssh.port in the profile",
        ) from exc


@contextlib.contextmanager
def connection(device: Device, trust_new_host: bool = False) -> Iterator[BoardConnection]:
    conn = connect(device, trust_new_host=trust_new_host)
    try:
        yield conn
    finally:
        conn.close()
