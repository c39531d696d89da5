"""Progress lines by time (`components.common.logs.Progress`) and training's step line by time; the clock is
injected: nothing here sleeps."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from components.common import logs


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _progress(clock: Clock, lines: list[str], **kwargs: object) -> logs.Progress:
    return logs.Progress("featurize", clock=clock, emit=lines.append, heard=lambda: float("-inf"), **kwargs)


def test_first_line_then_one_every_interval_with_the_status_and_elapsed_time() -> None:
    clock, lines = Clock(), []
    progress = _progress(clock, lines)
    clock.now += logs.FIRST_LINE_S - 0.5
    assert not progress.tick("loading the tokenizer") and lines == []
    clock.now += 0.5
    assert progress.tick() and lines == [f"featurize: loading the tokenizer, {logs.FIRST_LINE_S:.0f} s"]
    assert not progress.tick()  # just said
    clock.now += logs.PROGRESS_EVERY_S - 1
    progress.update("tokenizing 600 reviews")  # cheap: prints nothing
    assert not progress.tick() and len(lines) == 1
    clock.now += 1
    assert progress.tick() and lines[-1] == "featurize: tokenizing 600 reviews, 30 s"


def test_a_line_said_or_heard_elsewhere_postpones_the_next() -> None:
    clock, lines = Clock(), []
    heard = [float("-inf")]
    progress = logs.Progress("ingest", clock=clock, emit=lines.append, heard=lambda: heard[0])
    clock.now += 9
    progress.say("ingest: 600 rows")  # its own line
    clock.now += logs.PROGRESS_EVERY_S - 1
    assert not progress.due()
    clock.now += 1
    assert progress.due()
    heard[0] = clock.now  # another line of the process (training's step line, a relayed trial line)
    assert not progress.due() and not progress.tick()
    clock.now += logs.PROGRESS_EVERY_S
    assert progress.due()
    progress.said()  # the caller printed its own line
    assert not progress.due()
    assert lines == ["ingest: 600 rows"]


def test_the_heartbeat_thread_speaks_while_the_caller_is_busy() -> None:
    """As a context manager a thread ticks: a line comes while the caller sits in one long call (here: it waits
    on an event the line sets; the clock is moved by hand)."""
    clock, lines, said = Clock(), [], threading.Event()

    def emit(line: str) -> None:
        lines.append(line)
        said.set()

    progress = logs.Progress("bias check", clock=clock, emit=emit, heard=lambda: float("-inf"), poll=0.01)
    with progress:
        progress.update("counting labels")
        assert not said.wait(0.2)  # not due: nothing said
        clock.now += logs.FIRST_LINE_S
        assert said.wait(30)
    assert lines == [f"bias check: counting labels, {logs.FIRST_LINE_S:.0f} s"]
    assert progress._thread is None


def test_a_loop_deep_inside_tells_the_running_progress_where_it_is() -> None:
    """`logs.set_status` reaches the innermost running `Progress` (training's steps, inside the train step's
    `Progress`), and nothing once it ended."""
    clock, lines = Clock(), []
    progress = _progress(clock, lines, poll=3600)  # (its thread does not tick by itself here)
    logs.set_status("before: ignored")
    with progress:
        logs.set_status("step 12/34, loss 1.0894")
        clock.now += logs.FIRST_LINE_S
        assert progress.tick()
    logs.set_status("after: ignored")
    assert lines == [f"featurize: step 12/34, loss 1.0894, {logs.FIRST_LINE_S:.0f} s"]
    assert progress.status == "step 12/34, loss 1.0894"


def test_the_lines_are_in_the_one_format_the_local_run_shows(capsys: pytest.CaptureFixture[str]) -> None:
    """`Progress` writes to stderr as ``HH:MM:SS message`` (`logs.LINE`), on whatever stderr is at the time,
    and notes the line's time for every other `Progress` of the process."""
    before = logs.last_line_at()
    logs.Progress("evaluate").say("evaluate: predicting 120 reviews")
    err = capsys.readouterr().err
    assert logs.LINE.match(err) and err.rstrip("\n").endswith(" evaluate: predicting 120 reviews")
    assert logs.last_line_at() > before
    assert not logs.LINE.match("    [KFP Executor 2026-12-06 07:06:52,785 INFO]: Got executor_input:")
    logs.print_line("checks: the data, 10 s")  # (the run's own checks: stdout, stderr kept for an error)
    out = capsys.readouterr().out
    assert logs.LINE.match(out) and out.endswith(" checks: the data, 10 s\n")


def test_the_intervals_leave_room_under_30_seconds() -> None:
    """A loop's line comes before the heartbeat's, the heartbeat's before a relaying process speaks, and all
    well under the 30 s a user may wait (start-up and teardown take some)."""
    assert logs.LOOP_EVERY_S < logs.PROGRESS_EVERY_S < logs.RELAY_EVERY_S < 30
    assert logs.FIRST_LINE_S <= logs.LOOP_EVERY_S


# --- training's step line, by steps and by time ------------------------------------------------------------------


def _monitor(clock: Clock, reported: list[int]) -> object:
    from components.common.training_options import HealthArguments
    from components.train.callbacks import Throughput, TrainingMonitor

    args = SimpleNamespace(logging_steps=50, save_steps=0)
    monitor = TrainingMonitor(args, HealthArguments(), Throughput(1), {}, None, lambda m, step: reported.append(step))
    monitor.ticker = logs.Progress("train", every=logs.LOOP_EVERY_S, clock=clock, heard=lambda: float("-inf"))
    monitor.device = SimpleNamespace(type="cpu")  # (what on_train_begin takes from Trainer's arguments)
    return monitor


def test_training_prints_its_step_line_by_time_as_well_as_by_steps() -> None:
    """Steps of 4 s: the line every 50 steps (200 s) alone would leave minutes of silence; a line also comes
    once `LOOP_EVERY_S` passed since the last one, whatever the step count. Failed before: steps 50 and 100
    only."""
    clock, reported = Clock(), []
    monitor = _monitor(clock, reported)
    state = SimpleNamespace(global_step=0, max_steps=100, epoch=0.0, is_world_process_zero=True)
    training = SimpleNamespace(world_size=1)
    for step in range(1, 101):
        clock.now += 4
        state.global_step, state.epoch = step, step / 100
        logs_ = {"loss": 1.0, "learning_rate": 1e-5, "grad_norm": 1.0}
        monitor.on_log(training, state, SimpleNamespace(), logs=logs_)
    gaps = [b - a for a, b in zip([0, *reported], reported, strict=False)]
    assert 50 in reported and 100 in reported
    assert max(gaps) * 4 <= logs.LOOP_EVERY_S + 4  # (a line at the first step end after the interval)
    assert len(reported) < 100 / 3  # by time, not every step
