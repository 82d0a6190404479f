"""memdiag's own descriptors: never counted as the application's, never piling up, and
released by ``memdiag.stop()``.

Found by a new user's services (issue 14): the child walker kept each thread's
``/proc/PID/task/TID/children`` open after the thread exited (+16 descriptors a minute
with a short-lived thread every 2 s, up to its cache's bound of 512); the cgroup files and
the control channel's event loop were counted as the application's fds; ``memdiag.stop()``
left 17 files open. Each case runs in a fresh process, so that nothing else opens files
meanwhile.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

CODE = textwrap.dedent(
    """
    import json, os, threading, time

    def fds():
        out = {}
        for name in os.listdir("/proc/self/fd"):
            try:
                out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
            except OSError:
                pass
        return out

    base = fds()
    import memdiag
    from memdiag import leaks, runtime
    from memdiag.cli._client import ApiClient

    diag = memdiag.start(sample_interval=0.05, profile_interval=1.0, heap_snapshot_seconds=0.5)
    # the control channel's first client starts its event loop (epoll, self-pipe)
    assert ApiClient(f"unix:{runtime.runtime_dir() / f'{os.getpid()}.sock'}").get("/api/memory/status").status == 200
    for _ in range(60):  # short-lived threads, each seen by a few walks of the tree
        t = threading.Thread(target=time.sleep, args=(0.03,))
        t.start()
        t.join()
        time.sleep(0.04)
    time.sleep(1.2)  # a resource sample and a profile after the last thread
    report = leaks.leaks_report(diag)
    held = fds()
    tasks = len(os.listdir("/proc/self/task"))
    profile_fds = diag.profile()["process"]["fds"]
    memdiag.stop()
    left = {fd: target for fd, target in fds().items() if fd not in base}
    print(json.dumps({
        "base": len(base),
        "application": report["resources"]["application"]["fds"],
        "profile": profile_fds,
        "children_files": sum(1 for t in held.values() if t.endswith("/children")),
        "tasks": tasks,
        "left": left,
    }))
    """
)


def test_memdiags_descriptors_are_never_the_apps_never_pile_up_and_are_released() -> None:
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    # what the application had before memdiag started is all it has
    assert got["application"] == got["base"], got
    assert got["profile"] == got["base"], got
    # one children file per live thread at most, not one per thread ever started (60 here)
    assert got["children_files"] <= got["tasks"], got
    assert got["left"] == {}, f"memdiag.stop() left descriptors open: {got['left']}"
