"""Moved: the runs folder and launcher announcements live in flujo.launch.runs, the command
client in flujo.launch.command_client. These names stay importable from here."""
from __future__ import annotations

from flujo.launch.command_client import request
from flujo.launch.runs import (
    ANNOUNCEMENT,
    CommandError,
    UnsafeFolderError,
    find_flow,
    private_folder,
    private_runs_folder,
    running_flows,
    runs_folder,
)

__all__ = ["ANNOUNCEMENT", "CommandError", "UnsafeFolderError", "find_flow", "private_folder", "private_runs_folder",
           "request", "running_flows", "runs_folder"]
