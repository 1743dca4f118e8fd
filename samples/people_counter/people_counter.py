"""The people counter defined in Python: the same graph as manifest.toml beside this file.

    python3 samples/people_counter/people_counter.py [--source VIDEO] [--out FOLDER] [--realtime]

Prints counts as the clip plays, writes FOLDER/people_counter.mp4 (annotated) and
FOLDER/counts.jsonl, and exits 0 when the clip ends.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from flujo import Flow, FlowError
from flujo.nodes.sinks import ConsoleSink, JsonLinesSink
from flujo.nodes.video import VideoReader, VideoWriter
from flujo.nodes.vision import Annotator, LineCounter, PeopleDetector, Tracker

HERE = Path(__file__).resolve().parent
CREDIT = "PETS 2009 / University of Reading, via OpenCV samples"


def people_counter(
    source: str,
    out: str,
    detectors: int = 2,
    max_frames: int | None = None,
    name: str = "people-counter-py",
    realtime: bool = False,
) -> Flow:
    """The flow: read, detect (in parallel), track, count, draw, write."""
    flow = Flow(name, queue=8)
    reader = flow.add(VideoReader, source=source, max_frames=max_frames, realtime=realtime, name="reader")
    people = flow.add(PeopleDetector, reader, replicas=detectors, name="detector")
    tracks = flow.add(Tracker, people, name="tracker")
    counts = flow.add(LineCounter, tracks, line=[[0.5, 0.0], [0.5, 1.0]], name="counter")
    frames = flow.add(
        Annotator,
        frame=reader,
        tracks=tracks,
        counts=counts,
        credit=CREDIT if Path(source).name == "vtest.avi" else None,
        name="annotator",
    )
    flow.add(VideoWriter, frames, path=str(Path(out) / "people_counter.mp4"), name="video")
    flow.add(JsonLinesSink, counts, path=str(Path(out) / "counts.jsonl"), name="counts")
    flow.add(ConsoleSink, counts, fields=["index", "in", "out"], every=25, name="console")
    return flow


@click.command()
@click.option(
    "--source",
    default=str(HERE.parent / "data" / "vtest.avi"),
    show_default=True,
    help="Video file, camera index or stream URL.",
)
@click.option("--out", default="out", show_default=True, help="Folder for the annotated video and the counts.")
@click.option("--detectors", default=2, show_default=True, help="Detector replicas (processes).")
@click.option("--max-frames", type=int, help="Stop after this many frames.")
@click.option("--realtime", is_flag=True, help="Play a file at its frame rate, as a camera would deliver it.")
@click.option(
    "--name", default="people-counter-py", show_default=True, help="Flow name (one flow per name runs at once)."
)
def main(source: str, out: str, detectors: int, max_frames: int | None, name: str, realtime: bool) -> None:
    """Count the people crossing the middle of the picture, each way."""
    flow = people_counter(source, out, detectors, max_frames, name, realtime)
    try:
        flow.run()
    except FlowError as error:  # names the node that failed, and why
        sys.exit(str(error))
    counts = flow.summaries["counter"]  # what LineCounter.summary() reported at the end
    print(f"counted {counts['in']} in, {counts['out']} out")


if __name__ == "__main__":
    main()
