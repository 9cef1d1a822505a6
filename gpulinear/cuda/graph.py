"""Replay a fixed sequence of kernel launches as a CUDA graph.

`Replay.run(key, launches)` runs `launches()` (a function that only launches kernels on the
current stream: no allocation, no host sync, no cuBLAS) eagerly the first time a key is seen
(the warm-up: kernels compile, modules load), captures it into a CUDA graph the second time and
replays that graph from then on.  The step counter lives on the device, so one graph serves
every segment of the same shape.  If capture fails (a driver or library that refuses it), the
launches run eagerly from then on and `fallback_reason` says why (train() puts it in
Result.meta).  CuPy is imported only when a Replay is made.
"""
from __future__ import annotations


class Replay:
    def __init__(self, stream=None, enabled=True):
        import cupy
        self.stream = stream if stream is not None else cupy.cuda.Stream(non_blocking=True)
        self.enabled = enabled
        self.graphs: dict = {}
        self.seen: set = set()
        self.fallback_reason = None
        self.replays = 0

    def run(self, key, launches):
        """launches() on self.stream: replayed from a graph when one was captured for `key`."""
        with self.stream:
            graph = self.graphs.get(key)
            if graph is not None:
                graph.launch(self.stream)
                self.replays += 1
                return
            if self.enabled and self.fallback_reason is None and key in self.seen:
                if self._capture(key, launches):
                    self.graphs[key].launch(self.stream)
                    self.replays += 1
                    return
            self.seen.add(key)
            launches()

    def _capture(self, key, launches) -> bool:
        try:
            self.stream.begin_capture()
            try:
                launches()
            finally:
                graph = self.stream.end_capture()
        except Exception as exc:  # capture refused: plain launches for good, and say why
            self.fallback_reason = f"{type(exc).__name__}: {exc}"
            return False
        self.graphs[key] = graph
        return True
