import Testing

/// Every suite that stops, traces or checkpoints a live process is nested here, so that none
/// of them runs beside another: two tracers racing for one CPU-starved machine make timing
/// flakes, and a tracer's waitpid must not reap another test's child.
@Suite(.serialized) enum LiveProcess {}
