"""The shell run inside the VM around each step, and the parsing of what it reports.

envd ends a command only when both of its output pipes close, and a step's background
child (``server &``) keeps them open. So a step's end is not envd's end event: the step
runs under a wrapper that, once the step's shell exits, writes an end mark carrying the
exit status to both streams; the sandbox ends the step when it has seen both marks, then
sweeps what the step left running. The wrapper also copies both streams to files in the
VM (``tee``), so a server that restarts mid-step can read back what was printed while
nobody listened (envd drops the output of a command nobody is attached to).

The wrapper and its ``tee`` processes carry :data:`PLUMB_MARKER`, the step's own
processes :data:`STEP_MARKER` (and inherit the former): stopping a step signals only
those with :data:`STEP_MARKER`, so the plumbing keeps copying whatever a ``trap ... TERM``
prints until the step is gone.
"""

from __future__ import annotations

import re
import shlex

#: The variable that marks every process of one step (or of the preview process).
STEP_MARKER = "AGENTBUILD_STEP"
#: The variable that marks the wrapper and its copiers (never signalled by a stop).
PLUMB_MARKER = "AGENTBUILD_PLUMB"
#: Per-step files (``out``, ``err``, ``pid``) in the VM, relative to the user's home
#: (spelled out in :data:`_WRAPPER` too).
RUNS_DIR = ".agentbuild/runs"

#: ``$1`` marker, ``$2`` the step's script. ``set +e``: the wrapper itself never stops
#: early. The end mark goes through the same ``tee`` as the step's output, so it follows
#: every byte the shell itself wrote, in the live stream and in the copy alike. The copiers
#: read named pipes (no process but the step's holds their write ends) and the wrapper
#: waits for them: once it is gone, both copies are complete (what a re-attaching server's
#: ``tail --pid`` relies on).
_WRAPPER = r"""set +e
d="$HOME/.agentbuild/runs/$1"
rm -rf "$d" && mkdir -p "$d" && mkfifo "$d/o" "$d/e" || exit 125
tee -a "$d/out" < "$d/o" & o=$!
tee -a "$d/err" < "$d/e" >&2 & e=$!
echo $$ > "$d/pid"
{
  AGENTBUILD_STEP="$1" bash --noprofile --norc -c "$2" agentbuild-step
  s=$?
  printf '\036agentbuild-end %s %s\036' "$1" "$s"
  printf '\036agentbuild-end %s %s\036' "$1" "$s" >&2
} > "$d/o" 2> "$d/e" < /dev/null
wait $o $e
"""

#: ``$1`` the step's run directory, ``$2`` its wrapper's pid: both copies from their start
#: until the wrapper is gone (``tail`` reads once more after it noticed).
FOLLOW = r"""cd "$1" || exit 125
tail -c +1 -F --pid="$2" out 2>/dev/null &
tail -c +1 -F --pid="$2" err >&2 2>/dev/null
wait
"""

#: Where the build's environment is kept in the VM for a re-attaching server (secret
#: values are never stored outside the VM): root's only, relative to the home.
ENV_FILE = ".agentbuild-env.json"

#: Kills every process whose environment holds ``$1`` (``NAME=value``): ``$3`` (TERM or
#: KILL) first, then SIGKILL after ``$2`` milliseconds; prints ``KILL`` when it had to.
#: Reads /proc, so it needs nothing installed in the VM; runs as root, so it sees every
#: user's processes (one that cleared its environment, or went through ``sudo``, is not
#: found: the VM itself is killed when the build ends).
SWEEP = r"""
marked() { grep -lxzF -e "$1" /proc/[0-9]*/environ 2>/dev/null | sed 's#^/proc/##; s#/environ$##'; }
pids=$(marked "$1"); [ -z "$pids" ] && exit 0
kill -"$3" $pids 2>/dev/null
end=$(( $(date +%s%N) + $2 * 1000000 ))
while [ "$(date +%s%N)" -lt "$end" ]; do
  pids=$(marked "$1"); [ -z "$pids" ] && exit 0; sleep 0.05
done
pids=$(marked "$1"); [ -n "$pids" ] && kill -KILL $pids 2>/dev/null && echo KILL
exit 0
"""

#: One directory of the workspace, entry by entry: type letter, size, name and the link's
#: text as stored (NUL-separated), hex-dumped so that names that are not UTF-8 arrive
#: intact (the SDK decodes output with replacement). ``find`` reports dangling links and
#: fifos, which envd's ListDir gives an unknown type and the SDK's ``files.list`` drops.
LIST_DIR = (
    r"""cd "$1" && find . -mindepth 1 -maxdepth 1 -printf '%y %s %P\0%l\0' | od -An -v -tx1"""
)


def step_command(marker: str, script: str) -> str:
    """The command given to envd for one step (it runs it under ``bash -l -c``)."""
    script = "set -eo pipefail\n" + script
    return "exec bash --noprofile --norc -c " + " ".join(
        shlex.quote(arg) for arg in (_WRAPPER, "agentbuild-wrapper", marker, script)
    )


def end_mark(marker: str) -> re.Pattern[str]:
    """What the wrapper writes once the step's shell exited (group 1: its status)."""
    return re.compile("\x1eagentbuild-end " + re.escape(marker) + r" (\d+)\x1e")


class EndScanner:
    """Cuts the end mark out of one stream, whatever chunks it arrives in.

    ``feed`` returns the text to pass on (holding back a tail that may be the start of
    the mark); ``status`` is set once the mark went by."""

    def __init__(self, marker: str) -> None:
        self._pattern = end_mark(marker)
        self._prefix = "\x1eagentbuild-end "
        self._held = ""
        self.status: int | None = None

    def feed(self, text: str) -> str:
        text = self._held + text
        self._held = ""
        if self.status is None:
            found = self._pattern.search(text)
            if found is not None:
                self.status = int(found.group(1))
                return text[: found.start()] + text[found.end() :]
            start = text.rfind("\x1e")
            if start != -1 and len(text) - start < len(self._prefix) + 160:
                tail = text[start:]
                if self._prefix.startswith(tail[: len(self._prefix)]):
                    self._held = tail
                    return text[:start]
        return text

    def finish(self) -> str:
        held, self._held = self._held, ""
        return held


def parse_listing(dump: str) -> list[tuple[str, int, bytes, bytes]]:
    """``(type letter, size, name, link text)`` of each entry of :data:`LIST_DIR`'s output."""
    raw = bytes.fromhex("".join(dump.split()))
    fields = raw.split(b"\0")
    entries = []
    for head, target in zip(fields[0:-1:2], fields[1::2], strict=False):
        kind, size, name = head.split(b" ", 2)
        entries.append((kind.decode(), int(size), name, target))
    return entries
