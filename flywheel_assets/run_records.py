"""How the runs ``flywheel run`` makes are recorded in the Dagster instance, so they look like
runs launched from the UI and a killed one does not block later rounds.

- Origin: each run carries the workspace's code location as its repository origin (the one
  ``flywheel ui`` serves from ``workspace.yaml``), so the job's Runs tab, the Jobs list and the
  Overview timeline list it, not only a search by job name.
- Orphans: the runs execute inside the ``flywheel run`` process, so no run launcher or run
  monitor can see that process die. Each run is tagged with the host and pid (and the pid's
  start time, against pid reuse) that executes it; at start, ``flywheel run`` marks failed the
  runs of its own instance whose process is gone, which frees the size-1 rounds pool for runs
  launched from the UI.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path

import psutil
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.definitions.repository_definition.valid_definitions import SINGLETON_REPOSITORY_NAME
from dagster._core.remote_origin import RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.workspace.load import location_origins_from_yaml_paths

WORKSPACE = Path(__file__).resolve().parents[1] / "workspace.yaml"
HOST_TAG, PID_TAG, PID_STARTED_TAG = "flywheel/host", "flywheel/pid", "flywheel/pid_started"
LAUNCHED_BY_TAG = "flywheel/launched_by"
LAUNCHED_BY_CLI = "flywheel run"
UNFINISHED = [DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED,
              DagsterRunStatus.CANCELING]


def workspace_job_origin(job_name: str) -> RemoteJobOrigin:
    """The origin a run of ``job_name`` launched from the UI has: the code location that
    ``workspace.yaml`` declares (read by Dagster's own loader), its one repository."""
    [location] = location_origins_from_yaml_paths([str(WORKSPACE)])
    return RemoteJobOrigin(RemoteRepositoryOrigin(location, SINGLETON_REPOSITORY_NAME), job_name)


def process_tags() -> dict[str, str]:
    """Tags naming this process: what ``fail_orphaned_runs`` checks later."""
    return {LAUNCHED_BY_TAG: LAUNCHED_BY_CLI, HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()),
            PID_STARTED_TAG: f"{psutil.Process().create_time():.3f}"}


def _process_alive(tags: Mapping[str, str]) -> bool:
    try:
        process = psutil.Process(int(tags[PID_TAG]))
        return f"{process.create_time():.3f}" == tags.get(PID_STARTED_TAG) and process.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError, ValueError):
        return False


def fail_orphaned_runs(instance: DagsterInstance, report: Callable[[str], None] = print) -> list[str]:
    """Mark failed the unfinished runs that ``flywheel run`` started on this host in a process
    that no longer exists. Returns their run ids."""
    host = socket.gethostname()
    orphans = []
    for run in instance.get_runs(filters=RunsFilter(statuses=UNFINISHED, tags={LAUNCHED_BY_TAG: LAUNCHED_BY_CLI})):
        if run.tags.get(HOST_TAG) != host or _process_alive(run.tags):
            continue  # another machine's run, or still running
        message = (f"the `flywheel run` process (pid {run.tags.get(PID_TAG)}) that executed this run is gone "
                   f"(killed?); marked failed by a later `flywheel run` so that later rounds can run")
        instance.report_run_failed(run, message)
        report(f"run {run.run_id} ({run.tags.get('dagster/partition', run.job_name)}): {message}")
        orphans.append(run.run_id)
    return orphans
