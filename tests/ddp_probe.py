"""Runs ``hwnas`` under torchrun with probes that the distributed tests read (not a test module).

``torchrun ... tests/ddp_probe.py PROBE_DIR OUT_DIR -- search ...`` (or ``-- SCRIPT.py ...``, which
runs that script, as benchmarks/search_protocol.py under torchrun):

* after every epoch (and every per-budget search) each rank saves its architecture parameters and
  weights to ``PROBE_DIR/rank{r}-{n}.pt``, written by this probe, apart from hwnas's own files;
* on every rank but 0 an audit hook records any attempt to create, write, rename or remove a file
  under ``OUT_DIR`` in ``PROBE_DIR/writes-rank{r}.txt``;
* with ``PROBE_KILL=epoch:step:rank``, that rank kills itself with SIGKILL at the start of that step
  of that (0-based) epoch, in the group's first life only (not after an elastic restart);
  ``PROBE_KILL_TRAIN=epoch:rank`` does the same to ``hwnas train`` once it has trained that
  (1-based) epoch, before the epoch's checkpoint is written.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
from pathlib import Path

import torch

from hwnas.cli import main
from hwnas.search.loop import Search


def install(probe: Path, out: Path) -> None:
    # a hung collective fails the test with every rank's stacks instead of waiting for its time-out
    faulthandler.dump_traceback_later(float(os.environ.get("PROBE_HANG_S", "120")), exit=True)
    rank = int(os.environ.get("RANK", "0"))
    life = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    probe.mkdir(parents=True, exist_ok=True)
    (probe / f"started-rank{rank}-life{life}").touch()  # which lives ran (an elastic restart starts life 1)
    seen = {"n": 0}
    check = Search._check_ranks

    def recorded(self: Search, when: str) -> None:
        check(self, when)
        seen["n"] += 1
        state = {"when": when, "epoch": self.epoch, "life": life,
                 "alphas": [a.detach().clone() for a in self.net.arch_parameters()],
                 "weights": [w.detach().clone() for w in self.net.weight_parameters()]}  # fmt: skip
        torch.save(state, probe / f"rank{rank}-life{life}-{seen['n']}.pt")

    Search._check_ranks = recorded  # type: ignore[method-assign]
    select = Search._select

    def selected(self: Search, budget: float):  # type: ignore[no-untyped-def]
        d = select(self, budget)
        with open(probe / f"select-rank{rank}-life{life}.txt", "a") as f:
            f.write(f"{budget:g} {d.arch.to_str()}\n")
        return d

    Search._select = selected  # type: ignore[method-assign]

    kill = os.environ.get("PROBE_KILL")
    if kill and life == 0:
        epoch, step, who = (int(v) for v in kill.split(":"))
        reseed = Search._reseed_noise

        def maybe_die(self: Search, e: int, s: int, phase: int) -> None:
            if (e, s, phase, rank) == (epoch, step, 0, who):
                os.kill(os.getpid(), signal.SIGKILL)
            reseed(self, e, s, phase)

        Search._reseed_noise = maybe_die  # type: ignore[method-assign]

    kill_training = os.environ.get("PROBE_KILL_TRAIN")
    if kill_training and life == 0:  # hwnas train: die after training that epoch, before its checkpoint
        from hwnas.train import training

        epoch, who = (int(v) for v in kill_training.split(":"))
        average, epochs_done = training.average_batchnorm, {"n": 0}

        def averaged(model, group) -> None:  # type: ignore[no-untyped-def]
            epochs_done["n"] += 1
            if (epochs_done["n"], rank) == (epoch, who):
                os.kill(os.getpid(), signal.SIGKILL)
            average(model, group)

        training.average_batchnorm = averaged  # type: ignore[assignment]

    if rank != 0:
        inside = str(out.resolve())
        log = probe / f"writes-rank{rank}.txt"
        log.write_text("")

        def hook(event: str, args: tuple) -> None:
            if event == "open":
                path, mode, flags = args
                writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                    isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))  # fmt: skip
            elif event in ("os.rename", "os.replace", "os.mkdir", "os.remove", "os.rmdir", "os.symlink"):
                path, writing = args[0], True
            else:
                return
            if writing and isinstance(path, (str, bytes, os.PathLike)):
                full = os.path.abspath(os.fsdecode(path))
                if full == inside or full.startswith(inside + os.sep):  # not a sibling /out-probe
                    with open(log, "a") as f:
                        f.write(f"{event} {full}\n")

        sys.addaudithook(hook)


if __name__ == "__main__":
    probe_dir, out_dir, sep, *argv = sys.argv[1:]
    assert sep == "--", "usage: ddp_probe.py PROBE_DIR OUT_DIR -- (hwnas arguments | SCRIPT.py arguments)"
    install(Path(probe_dir), Path(out_dir))
    if argv and argv[0].endswith(".py"):  # a script that runs hwnas's searches and trainings itself
        import runpy

        sys.argv = argv
        sys.path.insert(0, str(Path(argv[0]).resolve().parent))
        runpy.run_path(argv[0], run_name="__main__")
        sys.exit(0)
    sys.exit(main(argv))
