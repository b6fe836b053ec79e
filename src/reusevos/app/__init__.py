"""The web app (``reusevos app``, the ``app`` extra): a page on which a person opens a video, marks the objects,
watches them segmented and downloads the masks.

- :mod:`reusevos.app.job`: one browser session's work, without the web (no Gradio): input, starts, corrections,
  runs (:func:`reusevos.segment.segment_video` in a worker thread) and their files.
- :mod:`reusevos.app.page`: the Gradio page and server that drive a :class:`~reusevos.app.job.Job` per session.

Nothing in the library imports this package (``tests/test_architecture.py``); only :mod:`reusevos.app.page`
imports Gradio.
"""
