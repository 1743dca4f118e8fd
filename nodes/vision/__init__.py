"""Vision nodes: people detection, tracking, line counting and drawing.

A typical flow: ``VideoReader -> PeopleDetector -> Tracker -> LineCounter``, with an
``Annotator`` joining the frames, tracks and counts for a ``VideoWriter``. The item
schemas are described in each module's docstring.
"""
from flujo.nodes.vision.annotator import Annotator
from flujo.nodes.vision.counter import LineCounter
from flujo.nodes.vision.detector import PeopleDetector
from flujo.nodes.vision.tracker import Tracker

__all__ = ["Annotator", "LineCounter", "PeopleDetector", "Tracker"]
