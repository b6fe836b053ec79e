"""Measurement, apart from the library: ``reusevos benchmark`` and ``reusevos ablation``.

:func:`reusevos.bench.run.run_benchmark` runs every requested setting (:mod:`~reusevos.bench.settings`:
variant, tau, tau2, windows, backbone runtime) over the same frames: sequences in the outer loop,
settings in the inner one, so a sequence's frames are decoded once (before any timing), held in memory
and shared by all settings, after one untimed warm-up. :mod:`~reusevos.bench.measure` runs one setting
on one sequence through the library's own timed loop and reads everything from the session's results;
:mod:`~reusevos.bench.report` aggregates per setting and prints the tables:

- ``fps``: frames / model time (the sum of ``Session.step`` times), the first-frame initialisation
  included; ``fps_excl_init``: the frames on which no object starts / their time;
- ``init_s_per_object``: target-model initialisation (augmentation + fit) per object;
- ``reuse_rate``: per object the frames that skipped the full path / tracked frames, averaged over all
  objects of all sequences;
- ``scores``: J&F, J, F (Mean, Recall, Decay) by the project's evaluator, in memory, over all objects;
- ``peak_rss_mb``: the largest resident set size of the whole process sampled while the setting ran;
  ``rss_increase_mb``: that peak minus the resident size when it started;
- ``stages_ms_per_frame``: the session's stages (``reusevos.session.Stage``; sub-stages inside their
  parents), ``other`` (model time no stage covers) and ``mask_encoding`` (label map to PNG bytes,
  measured apart, not part of the FPS);
- ``c``: mean time of a frame on which every object took the reuse path (for the ``copy`` variant: was
  copied) / mean time of a frame on which every object took the full path without a target-model
  re-optimisation, in the same setting, or, when it has none (tau = 0), in a setting at tau = 1
  (``c_reference`` names it); ``c_copy``: copied frames against computed ones;
- ``gflops_per_frame`` and ``computation_saved``: from the FLOPs of each path counted with
  ``torch.utils.flop_counter.FlopCounterMode`` on one representative frame.

Training never imports this package.
"""
