"""Nodes of the hello flow: plain functions are enough."""


def square(number: int) -> int:
    return number * number


def pair(a: int, b: int) -> dict[str, int]:
    return {"n": a, "square": b}
