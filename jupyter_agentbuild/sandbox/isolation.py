"""What an isolated local sandbox may see and do, as a bubblewrap command line.

Linux namespaces through bubblewrap (``bwrap``), never a home-made jail:

- **files**: the host's ``/`` read-only; the Jupyter data, runtime and config dirs, the
  user's home, every sandbox, the database's directory and the artifact store hidden
  under empty tmpfs mounts; only the build's own sandbox dir is bound back, writable,
  at the same path (so paths in logs mean the same inside and out), plus a private
  ``/tmp``. The Python installation the server runs is bound back read-only (when it
  lives in the hidden home) so builds still have the interpreter.
- **processes**: a pid namespace whose pid 1 is :data:`INIT` (a few lines of Perl,
  which Debian always has): it forwards SIGTERM to every process of the step, reports
  the step's real wait status on a pipe (bubblewrap itself can only say ``128+n``, which
  would make ``exit 143`` and "killed by SIGTERM" the same), and its exit makes the
  kernel kill everything left in the namespace, double-forked daemons included.
  ``--die-with-parent`` kills the namespace when the server dies, even by SIGKILL.
- **capabilities**: all dropped, so a build cannot unmount what hides the host's files.
- **network**: shared with the host by default (builds fetch packages; the preview's
  port is reachable by the proxy); ``network=False`` gives a namespace with only a
  loopback of its own.
- **limits**: rlimits set by the step's shell before the build's first command, soft and
  hard (a step cannot raise them): processes (``RLIMIT_NPROC``, counted per user, not
  enforced by the kernel for root), memory (``RLIMIT_DATA``), file size (``RLIMIT_FSIZE``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: The namespace's pid 1. ``$ARGV[0]``: the fd to report the step's wait status on;
#: the rest: the step's command. SIGTERM (and SIGINT, SIGHUP) from the host are passed
#: to every process of the namespace (``kill -1`` from pid 1 reaches all but itself);
#: orphans are reaped; when the step's process ends its raw wait status is written and
#: pid 1 exits, which kills whatever is left. The status fd is closed in the step.
INIT = r"""
my $fd = shift @ARGV;
open(my $status, '>&=', $fd) or exit 125;
for my $sig ('TERM', 'INT', 'HUP') { $SIG{$sig} = sub { kill $sig, -1 } }
my $pid = fork();
exit 126 unless defined $pid;
if (!$pid) {
    close $status;
    $SIG{$_} = 'DEFAULT' for ('TERM', 'INT', 'HUP');
    exec { $ARGV[0] } @ARGV;
    exit 127;
}
my $code = -1;
while (1) {
    my $done = waitpid(-1, 0);
    if ($done == $pid) { $code = $?; last }
    last if $done < 0 && !$!{EINTR};
}
syswrite($status, "$code\n");
exit 0;
"""


@dataclass(frozen=True)
class StepLimits:
    """Per-step resource limits; 0 means no limit."""

    max_processes: int = 2048
    max_memory: int = 8 * 1024**3
    max_file_size: int = 4 * 1024**3

    def shell_prefix(self) -> str:
        """A bash ``ulimit`` line setting both soft and hard limits (the step cannot
        raise them again), or "" for no limit at all. Units: processes; KiB for memory
        (``-d``) and for file size (``-f``, bash counts 1024-byte blocks)."""
        parts = []
        if self.max_processes > 0:
            parts.append(f"-u {self.max_processes}")
        if self.max_memory > 0:
            parts.append(f"-d {max(1, self.max_memory // 1024)}")
        if self.max_file_size > 0:
            parts.append(f"-f {max(1, self.max_file_size // 1024)}")
        return f"ulimit -S -H {' '.join(parts)}; " if parts else ""


#: Every sandbox gets empty, private ones of these.
PRIVATE_DIRS = ("/tmp", "/var/tmp", "/dev/shm")


@dataclass(frozen=True)
class IsolationPlan:
    """The paths a sandbox must not see, and those it needs back."""

    #: Hidden under an empty tmpfs (each one, and what is under it).
    hidden: tuple[str, ...]
    #: Bound back read-only (e.g. the Python installation inside a hidden home).
    readonly: tuple[str, ...] = ()
    limits: StepLimits = field(default_factory=StepLimits)

    def bwrap_args(self, sandbox_dir: Path, *, network: bool) -> list[str]:
        """bubblewrap options (before ``--``) for one step of the sandbox at ``sandbox_dir``."""
        args = [
            "--ro-bind", "/", "/",
            "--dev", "/dev",
            "--proc", "/proc",
            "--unshare-pid", "--as-pid-1",
            "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent",
            "--cap-drop", "ALL",
        ]  # fmt: skip
        if not network:
            args.append("--unshare-net")
        # private, empty temp dirs; then the hidden paths (those not already gone)
        private = [p for p in PRIVATE_DIRS if os.path.isdir(p)]
        for path in private:
            args += ["--tmpfs", path]
        hidden = _outermost(p for p in self.hidden if os.path.isdir(p))
        for path in hidden:
            if not any(_within(path, p) for p in private):
                args += ["--tmpfs", path]
        gone = [*private, *hidden]
        every_hidden = sorted({os.path.normpath(p) for p in self.hidden if os.path.isdir(p)})
        # what the build needs back from there, read-only, and hidden again inside it
        for path in _outermost(self.readonly):
            if os.path.exists(path) and any(_within(path, g) for g in gone):
                args += ["--ro-bind", path, path]
                for inner in every_hidden:
                    if _within(inner, path) and inner != path:
                        args += ["--tmpfs", inner]
        # the build's own dir, writable, at the same path as on the host
        args += ["--bind", str(sandbox_dir), str(sandbox_dir)]
        args += ["--chdir", str(sandbox_dir / "work")]
        return args


def _within(path: str, root: str) -> bool:
    path, root = os.path.normpath(path), os.path.normpath(root)
    return path == root or path.startswith(root.rstrip("/") + "/")


def _outermost(paths: Iterable[str]) -> list[str]:
    """Absolute, normalised, deduplicated, without those inside another; "/" never."""
    clean = sorted({os.path.normpath(p) for p in paths if p and os.path.isabs(p)})
    out: list[str] = []
    for path in clean:
        if path == "/" or any(_within(path, o) for o in out):
            continue
        out.append(path)
    return out


def python_prefixes() -> list[str]:
    """The server's Python installation(s): bound back read-only if they are hidden."""
    return sorted({sys.prefix, sys.base_prefix, sys.exec_prefix})


def find_bwrap() -> str | None:
    return shutil.which("bwrap")


def find_perl() -> str | None:
    return shutil.which("perl")


def probe(bwrap: str, perl: str, plan: IsolationPlan, scratch: Path) -> str | None:
    """Run one isolated ``true`` in ``scratch`` (with and without network): None when it
    worked, else why not (e.g. a container that forbids namespaces)."""
    work = scratch / "work"
    work.mkdir(parents=True, exist_ok=True)
    for network in (True, False):
        read, write = os.pipe()
        try:
            argv = [
                bwrap,
                *plan.bwrap_args(scratch, network=network),
                "--",
                perl,
                "-e",
                INIT,
                str(write),
                "/bin/sh",
                "-c",
                "test -w .",
            ]
            proc = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                pass_fds=(write,),
                timeout=30,
                check=False,
            )
            os.close(write)
            write = -1
            status = os.read(read, 64).decode(errors="replace").strip()
        except (OSError, subprocess.SubprocessError) as exc:
            return f"cannot run {bwrap}: {exc}"
        finally:
            os.close(read)
            if write >= 0:
                os.close(write)
        if proc.returncode != 0 or status != "0":
            err = proc.stderr.decode(errors="replace").strip().splitlines()
            why = err[-1] if err else f"exit status {proc.returncode}"
            return f"bubblewrap cannot create namespaces here: {why}"
    return None


def bwrap_command(
    bwrap: str,
    perl: str,
    plan: IsolationPlan,
    sandbox_dir: Path,
    status_fd: int,
    inner: Sequence[str],
    *,
    network: bool,
) -> list[str]:
    """The full argv: bubblewrap, then :data:`INIT` as pid 1, then ``inner``."""
    return [
        bwrap,
        *plan.bwrap_args(sandbox_dir, network=network),
        "--",
        perl,
        "-e",
        INIT,
        str(status_fd),
        *inner,
    ]


__all__ = ["INIT", "IsolationPlan", "StepLimits", "bwrap_command", "probe", "python_prefixes"]
